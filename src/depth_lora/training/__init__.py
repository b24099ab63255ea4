"""The training config, the run, the Trainer subclass and the losses."""
