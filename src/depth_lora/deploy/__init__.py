"""Merged models, ONNX and OpenVINO export, their runtimes, and which backend runs a folder."""
