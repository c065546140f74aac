"""Red-flag training (installed as rfsdk.train; needs the `train` extra)."""
