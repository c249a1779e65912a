"""Do the gate tests pin the thresholds? Moves each threshold of `embedfactory/filter/gates.py` a step either
way (and by the jumps a careless edit makes: COPY_JACCARD 0.99, REPEAT_WORD 40), runs the gate tests
against each mutant in a fresh process, and prints one line per mutation with the tests it fails:

    <NAME> <value> -> <mutant>: caught by <test> [, ...]      or      ... : NOT CAUGHT

then `mutations: N tried, C caught`. Exits 1 when a mutation goes uncaught.

    python bench/gate_mutations.py
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_gate_thresholds.py", "tests/test_gates.py"]
MUTATIONS = {
    "ECHO_N": [3, 5], "ECHO_CONTENT": [1, 3], "TASK_SPAN": [3, 5], "TASK_SHARE": [0.4, 0.6],
    "COPY_JACCARD": [0.7, 0.85, 0.99], "COPY_SPAN_SHARE": [0.8, 1.0], "COPY_SPAN_MIN": [3, 5],
    "COPY_SPAN_WORDS": [11, 13], "LENGTH_TOLERANCE": [0.4, 0.6], "LENGTH_SLACK": [2, 4],
    "QUERY_WORDS": [(2, 400), (4, 400), (3, 399), (3, 401)], "REPEAT_WORD": [3, 5, 40],
    "REPEAT_NGRAM": [2, 4], "REPEAT_SENTENCE": [2, 4], "LABEL_MAX_WORDS": [5, 7], "STS_NEAR": [0.75, 0.85],
    "STS_SENTENCE_WORDS": [2, 4], "SCRIPT_SHARE": [0.4, 0.6], "FOREIGN_WORDS": [2, 4],
}
RUN = """
import sys, pytest
from embedfactory.filter import gates
setattr(gates, {name!r}, {value!r})
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-p", "no:randomly", *{tests!r}]))
"""


def failed_tests(name: str, value) -> list[str]:
    done = subprocess.run([sys.executable, "-c", RUN.format(name=name, value=value, tests=TESTS)], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode not in (0, 1):  # 0: all passed, 1: some failed; else the run itself broke
        raise RuntimeError(f"the gate tests did not run for {name}={value!r}:\n"
                           f"{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return sorted(set(re.findall(r"^FAILED \S+::(\w+)", done.stdout, re.M)))


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from embedfactory.filter import gates

    assert not failed_tests("ECHO_N", gates.ECHO_N), "the gate tests fail without a mutation"
    caught = tried = 0
    for name, values in MUTATIONS.items():
        for value in values:
            tried += 1
            hits = failed_tests(name, value)
            caught += bool(hits)
            print(f"{name} {getattr(gates, name)!r} -> {value!r}: "
                  + (f"caught by {', '.join(hits)}" if hits else "NOT CAUGHT"), flush=True)
    print(f"mutations: {tried} tried, {caught} caught")
    return 0 if caught == tried else 1


if __name__ == "__main__":
    sys.exit(main())
