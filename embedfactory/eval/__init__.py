"""Held-out evaluation: the pinned sets and their loaders, scoring a model on them, paired significance."""
