"""Metrics and evaluation (knows nothing of how a model was trained)."""
