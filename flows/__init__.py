"""Prefect flows: `synth` (personas → training set), `train`, `eval`, `align`, `synth-shard`.

Run from the command line without `PREFECT_API_URL`, a flow starts Prefect's temporary server, which
Prefect waits 20 s for by default; on a small machine (2 cores, cold imports) it takes longer, so the
flows wait up to 180 s unless the setting is given.
"""
import os

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
