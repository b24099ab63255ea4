"""Captures on disk, the split, the training dataset, its cache and batch transforms."""
