"""`python -m depth_lora ...` is the same as the `depth-lora` command."""

import sys

from depth_lora.cli.commands import main

sys.exit(main())
