"""depth-lora bench: training and inference throughput, and the original pipeline."""
