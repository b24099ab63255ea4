"""Pure numpy helpers: depth metrics, alignment, hole fills, hole masks, geometry."""
