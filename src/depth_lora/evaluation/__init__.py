"""Held-out evaluation in mm: calibration, the report, hole-filling scores."""
