"""Zivid-like demo captures, rendered offline."""
