"""The `depth-lora` command line (work in progress)."""


def main(argv=None) -> int:
    return 0
