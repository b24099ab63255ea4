"""Zivid-like demo captures and source-domain scenes, rendered offline."""
