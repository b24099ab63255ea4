"""The depth-lora command line: its parser, flags, verbs and quickstart."""
