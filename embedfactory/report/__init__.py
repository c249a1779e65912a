"""Reports of a run: data quality, the per-stage summary, show, costs per example, progress, plots."""
