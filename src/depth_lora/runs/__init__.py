"""A run's output folder: its typed record (depth_lora.json), split, metrics and model card."""
