"""depth-lora: adapt Depth Anything V2 to your own RGB-D camera with LoRA, measured in mm."""

__version__ = "0.1.0"
