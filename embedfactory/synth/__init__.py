"""Synthesis: the run engine and its stages (personas, tasks, examples, revisions, grounded queries,
the filter's corpus and verdicts, duplicates), documents, sources, pre-flight."""
