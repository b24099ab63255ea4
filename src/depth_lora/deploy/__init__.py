"""Merged models and ONNX export, and the ONNX Runtime backend."""
