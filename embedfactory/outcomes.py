"""Expected ends of a run: conditions its user acts on, not bugs.

Too few rows to publish, a budget reached, bad inputs found before any model call: each is raised as
an `ExpectedStop` whose message says what happened and where to look. A command line prints that
message once and exits non-zero (tasks/common.py `run_cli`); a traceback would only bury it.
Everything else is unexpected and keeps its traceback.
"""
from __future__ import annotations


class ExpectedStop(Exception):
    """A run ended in a condition its message fully explains (what happened, where to look)."""

    exit_code = 1
