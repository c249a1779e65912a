"""The pipeline's stages as plain functions: rows in, rows out, no orchestration."""
