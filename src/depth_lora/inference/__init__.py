"""A trained run at work: depth in mm from images, and hole completion."""
