"""Bad input, as users meet it: does each fail early and clearly, and is nothing already written lost?

Runs the real `synth` flow (a temporary Prefect API), its command line and flow `train` against a
battery of bad parameters, malformed files of every accepted format, unreachable and misconfigured
endpoints, servers that answer errors or garbage (a fake OpenAI server: fault injection) and a
read-only store. Every case starts from a store that already holds a published dataset; after the
case that dataset must be byte-identical. Prints one line per case: seconds to fail, model calls
made before the error, whether the message names the culprit, and its first line; then

    bad inputs: N tried, E failed early naming the culprit, L lost rows

    python bench/bad_input.py [--only NAME_SUBSTRING]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ["HF_HUB_OFFLINE"] = "1"  # no Hub lookups: names that would need one are judged offline

import pyarrow as pa  # noqa: E402

from embedfactory.config import Endpoint, SynthParams  # noqa: E402
from embedfactory.publish.dataset import DATA_FILE  # noqa: E402
from embedfactory.schemas import DATASET  # noqa: E402
from embedfactory.store import Store  # noqa: E402
from fake_llm import FakeChatServer  # noqa: E402


@dataclass
class Case:
    name: str
    culprit: str  # what the message must name
    run: callable  # (store dir, fake server) -> None; should raise
    early: bool = True  # the input is known before any model call: it must fail with none made
    server: dict | None = None  # FakeChatServer options (None: a plain one)


def seed_store(root: Path) -> dict[str, bytes]:
    """A store with a published dataset (what a bad run must not touch): its files' bytes."""
    store = Store(str(root))
    path = store.path("datasets", "synth", "run-earlier")
    rows = [{"anchor": f"q{i}", "positive": f"p{i}", "negative": None, "instruction": "i", "task_type": "sts",
             "persona_id": "a", "task_id": "b", "example_id": f"e{i}", "source_id": None, "mined_negatives": []}
            for i in range(5)]
    sha = store.write_table(f"{path}/{DATA_FILE}", pa.Table.from_pylist(rows, schema=DATASET))
    store.write_json(f"{path}/card.json", {"name": "synth", "version": "run-earlier", "rows": 5, "sha256": sha,
                                          "columns": DATASET.names, "by_task_type": {"sts": 5}})
    store.write_json(store.path("datasets", "synth", "latest.json"), {"version": "run-earlier"})
    return snapshot(root)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in (root / "datasets").rglob("*") if p.is_file()}


def params(store: Path, server: FakeChatServer, **update) -> SynthParams:
    base = {"store": str(store), "generator": {"base_url": server.base_url, "model": "fake", "concurrency": 4},
            "synth": {"personas": 2, "tasks_per_persona": 1, "examples_per_task": 1, "task_mix": {"retrieval": 1},
                      "max_num_words": 30},
            "filter": {"gates": [], "background_corpus": None}, "train": None}
    for key, value in update.items():
        node, *rest = key.split(".")
        if rest:
            base.setdefault(node, {})
            base[node] = {**base[node], rest[0]: value} if isinstance(base[node], dict) else {rest[0]: value}
        else:
            base[key] = value
    return SynthParams.model_validate(base)


def synth(store: Path, server: FakeChatServer, **update) -> None:
    from flows.synth import synth as flow

    flow(params(store, server, **update))


def cli(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "flows.synth", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0:
        raise SystemExit(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "exit")


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def cases(tmp: Path) -> list[Case]:
    bad = tmp / "files"
    parquet = bad / "no_text.parquet"
    parquet.parent.mkdir(parents=True, exist_ok=True)
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"id": ["1"], "body": ["x"]}), parquet)
    beir = bad / "beir-without-corpus"
    (beir / "qrels").mkdir(parents=True, exist_ok=True)
    write(beir / "queries.jsonl", '{"_id": "q1", "text": "t"}\n')
    evalset = write(bad / "evalset.json", '{"name": "mine", "format": "beir"')
    from embedfactory.eval.sets import SHIPPED
    altered = write(bad / "altered.json", SHIPPED["stsb-test"].model_copy(
        update={"name": "altered", "sha256": "0" * 64}).model_dump_json())  # a real set, the files "changed"
    unknown_key = write(bad / "run.yaml", "params:\n  synth:\n    persona: 3\n")
    not_yaml = write(bad / "broken.yaml", "params:\n  synth: {personas: 3\n")
    beir_bad = bad / "beir-bad-query"
    write(beir_bad / "corpus.jsonl", '{"_id": "d1", "text": "a passage"}\n')
    write(beir_bad / "queries.jsonl", '{"_id": "q1", "text": "a"}\n{"_id": "q2", "query": "b"}\n')
    write(beir_bad / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    beir_set = write(bad / "beir-set.json", json.dumps({
        "name": "mine", "kind": "retrieval", "format": "beir", "path": str(beir_bad), "split": "test",
        "source": "bench", "sha256": None, "main_score": "ndcg@10"}))
    sts_set = write(bad / "sts-set.json", json.dumps({
        "name": "mine-sts", "kind": "sts", "format": "stsb", "path": write(bad / "sts.tsv", "a\tb\t4.5\n"),
        "split": "test", "source": "bench", "sha256": None, "main_score": "spearman"}))

    def s(**update):
        return lambda store, server: synth(store, server, **update)

    def read_only(store: Path, server):
        """A store that refuses writes (a full disk): immutable (chattr +i, which binds root too), else
        read-only by mode (which root ignores)."""
        store.chmod(stat.S_IRUSR | stat.S_IXUSR)
        immutable = False
        try:
            immutable = subprocess.run(["chattr", "+i", str(store)], capture_output=True).returncode == 0
            synth(store, server)
        finally:
            if immutable:
                subprocess.run(["chattr", "-i", str(store)], capture_output=True)
            store.chmod(stat.S_IRWXU)

    def train_without_dataset(store: Path, server):
        from flows.train import train
        train(store=str(store), dataset="nothing-here")

    def align(**update):
        def run(store: Path, server):
            from embedfactory.align.config import AlignParams
            from flows.align import align as flow
            teacher = {"base_url": server.base_url, "model": "fake", **update.get("teacher", {})}
            flow(AlignParams(store=str(store), **{**update, "teacher": teacher}))
        return run

    return [
        Case("personas 0", "personas", s(**{"synth.personas": 0})),
        Case("unknown task type", "poetry", s(**{"synth.task_mix": {"poetry": 1}})),
        Case("negative budget", "budget_usd", s(budget_usd=-1)),
        Case("filter model typo", "filter.model", s(**{"filter.model": "embedded:all-MiniLM-L6-v3"})),
        Case("student path missing", "train.base_model",
             s(train={"base_model": str(tmp / "no-such-model"), "eval_sets": []})),
        Case("guide not a model id", "train.guide_model", s(train={"guide_model": "mpnet", "eval_sets": []})),
        Case("query template placeholder", "query_template", s(train={"query_template": "{question} {query}"})),
        Case("store under a file", "store", lambda store, server: synth(Path(write(tmp / "afile", "x")) / "s", server)),
        Case("read-only store (full disk)", "not writable", read_only),
        Case("persona source missing", "persona_source", s(**{"synth.persona_source": str(bad / "nobody.txt")})),
        Case("persona source malformed JSONL", "personas.jsonl",
             s(**{"synth.persona_source": write(bad / "personas.jsonl", '{"persona": "a"}\n{"persona": \n')})),
        Case("topic source empty", "topics.txt", s(**{"synth.topic_source": write(bad / "topics.txt", "\n")})),
        Case("corpus JSONL bad line", "docs.jsonl:2",
             s(**{"grounded.corpus": write(bad / "docs.jsonl", '{"id": "1", "text": "a"}\n{"id": 2, text}\n')})),
        Case("corpus Parquet without text", "no_text.parquet", s(**{"grounded.corpus": str(parquet)})),
        Case("corpus BEIR folder without corpus.jsonl", "beir-without-corpus", s(**{"grounded.corpus": str(beir)})),
        Case("external corpus without text column", "no_text.parquet", s(**{"filter.external_corpus": str(parquet)})),
        Case("background corpus missing", "background.txt",
             s(**{"filter.background_corpus": str(bad / "background.txt")})),
        Case("eval set unknown", "nope", s(train={"eval_sets": ["nope"]})),
        Case("eval set JSON malformed", "evalset.json", s(train={"eval_sets": [evalset]})),
        Case("eval set altered (sha256)", "altered", s(train={"eval_sets": [altered]})),
        Case("eval set BEIR queries line malformed", "queries.jsonl:2", s(train={"eval_sets": [beir_set]})),
        Case("eval set STS TSV row short", "sts.tsv:1", s(train={"eval_sets": [sts_set]})),
        Case("config unknown key", "persona", lambda store, server: cli("--config", unknown_key)),
        Case("config not YAML", "broken.yaml", lambda store, server: cli("--config", not_yaml)),
        Case("--set without =", "KEY=VALUE", lambda store, server: cli("--set", "personas")),
        Case("endpoint unreachable", "127.0.0.1:9",
             lambda store, server: synth(store, server, generator={"base_url": "http://127.0.0.1:9/v1", "model": "m",
                                                                    "timeout_s": 2})),
        Case("model not served", "not served",
             lambda store, server: synth(store, server, generator={"base_url": server.base_url, "model": "fak"})),
        Case("key refused", "FACTORY_BAD_KEY",
             lambda store, server: synth(store, server, generator={"base_url": server.base_url, "model": "fake",
                                                                    "api_key_env": "FACTORY_BAD_KEY"}),
             server={"require_key": "sk-right"}),
        Case("hosted API without its key", "FACTORY_UNSET_KEY",
             lambda store, server: synth(store, server, generator={"base_url": "https://api.openai.com/v1",
                                                                    "model": "gpt-4o-mini",
                                                                    "api_key_env": "FACTORY_UNSET_KEY"})),
        Case("train on a store without the dataset", "nothing-here", train_without_dataset),
        Case("align base model typo", "base_model", align(base_model="embedded:qwen2.5-0.5b")),
        Case("align teacher model not served", "'gpt-4'",
             align(teacher={"model": "gpt-4"})),
        # the server misbehaves mid-run: not knowable up front; the run must fail (or finish) cleanly
        Case("server answers 500 always", "500", s(**{"generator.transport_retries": 1}), early=False,
             server={"fault_rates": {"http_500": 1.0}}),
        Case("server refuses every request (HTTP 400)", "HTTP 400", s(), early=False,
             server={"fault_rates": {"http_400": 1.0}}),
        Case("server answers garbage JSON", "kept 0", s(), early=False, server={"fault_rates": {"invalid_json": 1.0}}),
        Case("server truncates every reply", "kept 0", s(), early=False, server={"fault_rates": {"truncated": 1.0}}),
    ]


def run_case(case: Case, tmp: Path) -> dict:
    store = tmp / "store"
    shutil.rmtree(store, ignore_errors=True)
    before = seed_store(store)
    os.environ.pop("FACTORY_UNSET_KEY", None)
    os.environ["FACTORY_BAD_KEY"] = "sk-wrong"
    with FakeChatServer(**(case.server or {})) as server:
        started = time.monotonic()
        try:
            case.run(store, server)
            error = None
        except BaseException as exc:  # noqa: BLE001 - SystemExit from the CLI cases too
            error = exc
        seconds = time.monotonic() - started
        calls = len(server.requests)
    message = str(error) if error is not None else "(no error)"
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    first = next((line for line in lines if case.culprit.lower() in line.lower()), lines[0] if lines else "")
    at = first.lower().find(case.culprit.lower())
    shown = first[:110] if at < 70 else f"{first[:40]} ... {first[at - 30:at + 40]}"  # keep the culprit in view
    named = error is not None and case.culprit.lower() in message.lower()
    return {"case": case.name, "seconds": round(seconds, 1), "model_calls": calls, "named": named,
            "early": named and calls == 0 and case.early, "runtime": not case.early,
            "lost": lost_rows(store, before), "error": type(error).__name__ if error else "-", "first_line": shown}


def lost_rows(store: Path, before: dict[str, bytes]) -> int:
    """Rows of the dataset published before the case that the store's `latest` no longer holds."""
    import io

    import pyarrow.parquet as pq
    earlier = pq.read_table(io.BytesIO(before[f"datasets/synth/run-earlier/{DATA_FILE}"])).to_pylist()
    try:
        version = json.loads((store / "datasets" / "synth" / "latest.json").read_text())["version"]
        now = pq.read_table(store / "datasets" / "synth" / version / DATA_FILE).to_pylist()
    except (OSError, ValueError, KeyError):
        return len(earlier)
    return sum(row not in now for row in earlier)


def main() -> None:
    cli_args = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli_args.add_argument("--only", help="run the cases whose name contains this")
    args = cli_args.parse_args()
    from prefect.testing.utilities import prefect_test_harness

    tmp = Path(tempfile.mkdtemp(prefix="bad-input-"))
    os.environ["PREFECT_HOME"] = str(tmp / "prefect")
    results = []
    with prefect_test_harness(server_startup_timeout=180):
        for case in cases(tmp):
            if args.only and args.only not in case.name:
                continue
            results.append(run_case(case, tmp))
            r = results[-1]
            when = "run" if r["runtime"] else "early" if r["early"] else "LATE"
            print(f"{r['case']:<42} {r['seconds']:>6}s calls {r['model_calls']:>3} "
                  f"{'named' if r['named'] else 'NOT NAMED':<9} {when:<5} "
                  f"lost {r['lost']}  {r['error']}: {r['first_line']}", flush=True)
    early = sum(r["early"] for r in results)
    runtime = [r for r in results if r["runtime"]]
    if runtime:  # not knowable before a model call: they must fail cleanly, naming the fault
        print(f"(of these, {len(runtime)} are server faults met at run time, marked 'run': "
              f"{sum(r['named'] for r in runtime)} of them failed cleanly naming the fault; the other "
              f"{len(results) - len(runtime)} inputs are known up front and must fail before any model call)")
    print(f"bad inputs: {len(results)} tried, {early} failed early naming the culprit, "
          f"{sum(r['lost'] for r in results)} lost rows")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
