"""Thin Prefect tasks: each wraps one library call with retries, caching and progress."""
