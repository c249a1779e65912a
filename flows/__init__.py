"""Prefect flows: `synth` (personas → training set), `train`."""
