"""Training loop and experiment tracking."""
