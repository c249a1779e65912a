"""Hugging Face Hub: a published dataset's card (README.md, written beside its Parquet at publish) and
pushing a dataset or a trained model folder to a Hub repository (private by default; the token from
the environment, HF_TOKEN, as huggingface_hub reads it)."""
from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from ..models import hub_id, licence_lines
from ..report.quality import to_markdown
from ..store import StageDir, Store
from .dataset import DATA_FILE, read_dataset

SAMPLE_ROWS = 5
TASK_CATEGORIES = {"retrieval": "text-retrieval", "classification": "text-classification"}  # beyond the two below
SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]
LINEAGE_COLUMNS = ("persona_id", "task_id", "example_id", "source_id")
HUB_RECORD = "hub.json"  # beside a pushed dataset: its repo id, for the cards of models trained on it
OTHER_LICENSE = ("This dataset was written by language models ({models}) and filtered by embedfactory.\n"
                 "Its use is subject to the licences and terms of use of those models; check them before "
                 "you use or share it.\n")


def size_category(rows: int) -> str:
    return next((name for bound, name in SIZES if rows < bound), "n>100M")


def features(schema: pa.Schema) -> list[dict]:
    """The card's `dataset_info.features` for a table schema (strings and lists of strings here)."""
    def dtype(t: pa.DataType):
        if pa.types.is_list(t):
            return {"sequence": dtype(t.value_type)}
        return {"dtype": "string" if pa.types.is_string(t) else str(t)}
    return [{"name": f.name, **dtype(f.type)} for f in schema]


def front_matter(card: dict, schema: pa.Schema, num_bytes: int, license: str, stages: dict[str, pa.Schema]) -> dict:
    """The YAML metadata the Hub reads: configs and features, size, task categories, licence, models."""
    params = card.get("params") or {}
    models = sorted({hub_id(m) or m for m in (_model(params, "generator"), _model(params, "brainstormer"),
                                              _model(params, "revisor"), (params.get("filter") or {}).get("model"))
                     if m})
    configs = [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}],
                "default": True}]
    configs += [{"config_name": stage, "data_files": [{"split": "train", "path": f"stages/{stage}/*.parquet"}]}
                for stage in stages]
    info = [{"config_name": "default", "features": features(schema),
             "splits": [{"name": "train", "num_bytes": num_bytes, "num_examples": card["rows"]}]}]
    info += [{"config_name": stage, "features": features(s)} for stage, s in stages.items()]
    categories = ["sentence-similarity", "feature-extraction"]
    categories += [TASK_CATEGORIES[t] for t in sorted(card.get("by_task_type", {})) if t in TASK_CATEGORIES]
    licence = {"license": license, **({"license_name": "model-generated-data", "license_link": "LICENSE"}
                                       if license == "other" else {})}  # the Hub wants a name and link for other
    return {"pretty_name": f"{card['name']} ({card['version']})", **licence,
            "task_categories": categories, "size_categories": [size_category(card["rows"])],
            "tags": ["embedfactory", "synthetic", "embeddings", "sentence-transformers"],
            "source_models": models, "configs": configs, "dataset_info": info}


def data_models(params: dict) -> list[tuple[str, str | None]]:
    """(role, embedding model) of each model that filtered, mined or labelled a run's rows."""
    filt = params.get("filter") or {}
    return [("ranking-consistency filter", filt.get("model")),
            ("hard-negative miner", filt.get("model") if filt.get("mined_negatives") else None)]


def terms_lines(params: dict) -> list[str]:
    """The terms of use (models.LICENCES) that the models which filtered, mined or labelled the rows carry
    onto them; none for runs that use no such model."""
    return licence_lines(data_models(params))


def _model(params: dict, role: str) -> str | None:
    endpoint = params.get(role)
    return endpoint.get("model") if isinstance(endpoint, dict) else None


def dataset_card(card: dict, table: pa.Table, quality: dict | None = None, evaluation: list[dict] | None = None,
                 license: str = "other", stages: dict[str, pa.Schema] | None = None) -> str:
    """README.md of a published dataset: YAML front matter, then how it was made (models, prompt
    versions, filter, gates and their rejects, attribute distributions: the run's quality report),
    base vs fine-tuned scores where a model was trained on it, and `SAMPLE_ROWS` rows."""
    stages = stages or {}
    params = card.get("params") or {}
    meta = yaml.safe_dump(front_matter(card, table.schema, table.nbytes, license, stages), sort_keys=False,
                          allow_unicode=True)
    samples = table.slice(0, SAMPLE_ROWS).to_pylist()
    filt = params.get("filter") or {}
    lines = [f"---\n{meta}---", "", f"# {card['name']} ({card['version']})", "",
             f"{card['rows']} training rows for text-embedding models, synthesized by embedfactory "
             "(SPEED / KaLM-Embedding recipes) in run "
             f"`{card.get('run_id', card['version'])}`, sha256 `{card['sha256']}`.", "",
             "```python", "from datasets import load_dataset", "",
             'rows = load_dataset("<this folder or OWNER/NAME>", split="train")', "```", "",
             "## Columns", "",
             "- `anchor`, `positive`, `negative` (null where the task type has none): sentence-transformers' "
             "(anchor, positive, negative) layout; `instruction`: the task the anchor was written for; "
             "`task_type`; `mined_negatives`: hard negatives mined by the filter, hardest first",
             f"- lineage: {', '.join(f'`{c}`' for c in LINEAGE_COLUMNS)} (persona -> task -> example; "
             "`source_id` the passage of a grounded query); each id is a row of the stage rows "
             + ("(configs " + ", ".join(f"`{s}`" for s in stages) + ")" if stages else "kept in the factory's store"),
             "", "## How it was made", "",
             f"- generator `{_model(params, 'generator')}`; brainstorm (personas, tasks) "
             f"`{_model(params, 'brainstormer') or _model(params, 'generator')}`; revisor "
             f"`{_model(params, 'revisor') or _model(params, 'generator')}`"
             + ("" if (params.get("synth") or {}).get("revise", True) else " (revision off)"),
             f"- by task type: {json.dumps(card.get('by_task_type', {}))}",
             f"- filter: ranking consistency with `{filt.get('model')}` (top-k {filt.get('topk')}, per task "
             f"type), {filt.get('mined_negatives')} hard negatives mined from ranks {filt.get('mine_range')}",
             f"- prompt versions: {json.dumps((quality or {}).get('prompt_versions')) if quality else 'in the stage rows'}"]
    if terms := terms_lines(params):
        lines += ["", "## Terms of use", "", *(f"- {line}" for line in terms)]
    if quality and quality.get("attributes"):
        lines += ["", "![attribute shares: recipe, drawn, kept](attributes.png)"]
    if quality:  # gates and their rejects, filter drops, attribute histograms, LLM usage
        lines += ["", *("#" + line if line.startswith("#") else line for line in to_markdown(quality).splitlines())]
    if evaluation:
        lines += ["", "## A model trained on it", "", "| set | metric | base | fine-tuned |", "|---|---|---|---|"]
        lines += [f"| {r['set']} | {r['metric']} | {r['base']} | {r['fine_tuned']} |" for r in evaluation]
    lines += ["", f"## {len(samples)} sample rows", ""]
    for row in samples:
        shown = {k: row.get(k) for k in ("task_type", "instruction", "anchor", "positive", "negative")}
        lines += ["```json", json.dumps(shown, ensure_ascii=False, indent=1), "```"]
    return "\n".join(lines) + "\n"


def card_text(store: Store, path: str, license: str = "other", stages: dict[str, pa.Schema] | None = None) -> str:
    """The card of a published folder, from its card.json, quality.json, rows and any model trained on it."""
    card = store.read_json(f"{path}/card.json")
    table = read_dataset(store, path)
    quality = store.read_json(f"{path}/quality.json") if store.exists(f"{path}/quality.json") else None
    return dataset_card(card, table, quality, trained_evaluation(store, card), license, stages)


def write_dataset_card(store: Store, path: str, license: str = "other") -> str:
    """Write `<path>/README.md`: the folder is then what `datasets.load_dataset(folder)` and the Hub read."""
    text = card_text(store, path, license)
    store.write_bytes(f"{path}/README.md", text.encode())
    return text


def trained_evaluation(store: Store, card: dict) -> list[dict] | None:
    """Base vs fine-tuned rows of the latest model trained on this dataset version, if any."""
    root = store.path("models", card["name"])
    reports = [p for p in store.list(root, recursive=True) if p.endswith("/train_report.json")
               and p.rsplit("/", 2)[-2].startswith(f"{card['version']}-")] if store.exists(root) else []
    for path in sorted(reports, reverse=True):
        report = store.read_json(path)
        if (report.get("evaluation") or {}).get("rows"):
            return report["evaluation"]["rows"]
    return None


def push_dataset(store: Store, path: str, repo_id: str, private: bool = True, with_stages: bool = False,
                 license: str = "other", endpoint: str | None = None, token: str | None = None) -> str:
    """Push a published dataset folder (and with `with_stages` every stage's rows of its run as one
    config per stage) to the Hub dataset `repo_id`. Returns the commit URL."""
    card = store.read_json(f"{path}/card.json")
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        stages = {}
        if with_stages:  # each stage's committed shards (stale or uncommitted files left out)
            run = card.get("run_id", card["version"])
            for stage in sorted(stage_names(store, run)):
                stage_dir, schemas = StageDir(store, run, stage), []
                for record in sorted(stage_dir.records(), key=lambda r: r.key):
                    target = folder / "stages" / stage / f"part-{record.key}.parquet"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(store.read_bytes(stage_dir.shard_path(record.key)))
                    schemas.append(pq.read_schema(target))
                if schemas:
                    stages[stage] = pa.unify_schemas(schemas, promote_options="permissive")
        (folder / DATA_FILE).parent.mkdir(parents=True)
        if store.exists(f"{path}/{DATA_FILE}"):  # the very file the card's sha256 names
            (folder / DATA_FILE).write_bytes(store.read_bytes(f"{path}/{DATA_FILE}"))
        else:  # a dataset published before the Hub layout
            pq.write_table(read_dataset(store, path), folder / DATA_FILE, compression="zstd")
        for name in ("card.json", "quality.json", "attributes.png"):
            if store.exists(f"{path}/{name}"):
                (folder / name).write_bytes(store.read_bytes(f"{path}/{name}"))
        (folder / "README.md").write_text(card_text(store, path, license, stages))
        if license == "other":  # the card's license_link
            (folder / "LICENSE").write_text(OTHER_LICENSE.format(models=", ".join(
                front_matter(card, pa.schema([]), 0, license, {})["source_models"]) or "the generator")
                + "".join(f"\n{line}.\n" for line in terms_lines(card.get("params") or {})))
        url = _upload(folder, repo_id, "dataset", private, endpoint, token,
                      f"embedfactory: {card['name']} {card['version']}")
    try:  # models trained on these rows name the repo in their cards
        store.write_json(f"{path}/{HUB_RECORD}", {"repo_id": repo_id, "url": url, "sha256": card["sha256"]})
    except OSError as exc:  # a read-only store: the push itself succeeded
        warnings.warn(f"pushed, but {path}/{HUB_RECORD} could not be written ({exc}): "
                      "give `publish-model --dataset` for models trained on it")
    return url


def with_front_matter(readme: str, **keys) -> str:
    """The card with `keys` set in its YAML front matter (the rest kept, in order); unchanged when it
    has none (sentence-transformers always writes one)."""
    if not (readme.startswith("---\n") and (end := readme.find("\n---\n", 4)) != -1):
        return readme
    meta = {**(yaml.safe_load(readme[4:end]) or {}), **keys}
    return f"---\n{yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)}---\n{readme[end + 5:]}"


def stage_names(store: Store, run: str) -> set[str]:
    root = store.path("runs", run)
    return {p[len(root) + 1:].split("/", 1)[0] for p in store.list(root, recursive=True) if "/_shards/" in p}


def trained_on(store: Store, model_path: str) -> list[str]:
    """The Hub id of the dataset a trained model folder was made from, when that dataset was pushed
    (`publish --push-to-hub` leaves its record beside the data); else none."""
    report = f"{model_path.rstrip('/').rsplit('/', 1)[0]}/train_report.json"
    if not store.exists(report):
        return []
    dataset = store.read_json(report)["dataset"]
    record = f"{dataset['path']}/{HUB_RECORD}"
    if not store.exists(record) or (pushed := store.read_json(record)).get("sha256") != dataset["sha256"]:
        return []  # never pushed, or pushed with other rows than the model was trained on
    return [pushed["repo_id"]]


def push_model(store: Store, path: str, repo_id: str, private: bool = True, datasets: list[str] | None = None,
               endpoint: str | None = None, token: str | None = None) -> str:
    """Push a trained sentence-transformers folder (a train report's `model_path`) to the Hub model
    `repo_id`; its card's front matter names the training data's Hub `datasets` (given, or found by
    `trained_on`)."""
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "model"
        if store.is_local:
            shutil.copytree(path, folder)
        else:
            store.download_dir(path, folder)
        datasets = datasets or trained_on(store, path)
        readme = folder / "README.md"
        if datasets and readme.exists():
            readme.write_text(with_front_matter(readme.read_text(), datasets=datasets))
        return _upload(folder, repo_id, "model", private, endpoint, token, f"embedfactory: {Path(path).parent.name}")


def _upload(folder: Path, repo_id: str, repo_type: str, private: bool, endpoint: str | None,
            token: str | None, message: str) -> str:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, commit_message=message)
    return str(info)
