"""Filtering: quality gates, the ranking-consistency filter and mining over one exact search, dedupe, teacher labels."""
