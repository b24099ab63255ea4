"""Depth Anything checkpoints (hub, local, bundled, random-init), heads, LoRA, precision."""
