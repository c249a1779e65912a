"""Hub publishing: the dataset card and layout on their own (datasets loads the folder), and the
upload's request sequence against a local stand-in for the Hub's HTTP API (no network)."""
import base64
import json
from http.server import BaseHTTPRequestHandler

import pyarrow as pa
import pytest
import yaml
from loopback import Loopback

from embedfactory.__main__ import main
from embedfactory.publish import hub
from embedfactory.publish.dataset import DATA_FILE
from embedfactory.schemas import DATASET
from embedfactory.store import ShardRecord, StageDir, Store

ROWS = [{"anchor": f"how do I reset pin {i}", "positive": f"To reset PIN {i}, open the app.",
         "negative": None if i % 2 else f"PIN {i} cannot be shared.", "instruction": "Given a banking question, "
         "retrieve the answer", "task_type": "retrieval" if i % 3 else "sts", "persona_id": f"p{i}",
         "task_id": f"t{i}", "example_id": f"e{i}", "source_id": None,
         "mined_negatives": [f"mined {i}", "other"] if i % 2 else []} for i in range(8)]
QUALITY = {"kept": 8, "rows": {"examples": {"ok": 10, "rejected": 2}}, "llm_usage": [],
           "attributes": {"sts": {"unit": {"sentence": {"reference": 0.9, "drawn": 1.0, "kept": 1.0}}}},
           "by_task_type": {}, "rejection_reasons": {"examples": {"gate echo": 2}}, "filter_drops": {"rank": 1},
           "duplicates": {}, "revisor": {}, "lengths_in_words": {}, "prompt_versions": {"generate_sts": ["abc123"]}}


def published(tmp_path) -> tuple[Store, str]:
    store = Store(str(tmp_path / "store"))
    path = store.path("datasets", "synth", "run-1")
    sha = store.write_table(f"{path}/{DATA_FILE}", pa.Table.from_pylist(ROWS, schema=DATASET))
    store.write_json(f"{path}/card.json", {
        "name": "synth", "version": "run-1", "rows": len(ROWS), "sha256": sha, "columns": DATASET.names,
        "by_task_type": {"retrieval": 5, "sts": 3}, "run_id": "run-1",
        "params": {"generator": {"model": "Qwen/Qwen2.5-7B-Instruct"}, "brainstormer": {"model": "gpt-4o"},
                   "revisor": None, "filter": {"model": "embedded:all-MiniLM-L6-v2", "topk": None,
                                               "mined_negatives": 7, "mine_range": [50, 100]}}})
    store.write_json(f"{path}/quality.json", QUALITY)
    examples = StageDir(store, "run-1", "examples")
    examples.commit(pa.Table.from_pylist([{"example_id": "e1", "fields": "{}"}]),
                    ShardRecord(key="00000", fingerprint="f", rows=1))
    store.write_table(examples.shard_path("00001"), pa.Table.from_pylist([{"example_id": "stale"}]))  # uncommitted
    store.write_json(store.path("runs", "run-1", "summary.json"), [])  # a run's own files beside its stages
    return store, path


def front(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_the_card_says_how_the_data_was_made_and_the_folder_loads_with_datasets(tmp_path):
    from datasets import load_dataset

    store, path = published(tmp_path)
    text = hub.write_dataset_card(store, path)
    meta = front(text)
    assert meta["configs"] == [{"config_name": "default", "default": True,
                                "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}]
    assert meta["size_categories"] == ["n<1K"] and meta["license"] == "other"
    assert meta["task_categories"] == ["sentence-similarity", "feature-extraction", "text-retrieval"]
    assert meta["source_models"] == ["Qwen/Qwen2.5-7B-Instruct", "gpt-4o", "sentence-transformers/all-MiniLM-L6-v2"]
    assert meta["license_name"] and meta["license_link"]  # what the Hub asks beside `other`
    features = {f["name"]: f for f in meta["dataset_info"][0]["features"]}
    assert list(features) == DATASET.names and features["mined_negatives"] == {
        "name": "mined_negatives", "sequence": {"dtype": "string"}}
    body = text.split("---\n", 2)[2]
    assert "brainstorm (personas, tasks) `gpt-4o`" in body and "7 hard negatives mined from ranks [50, 100]" in body
    assert '"gate echo": 2' in body and "| sts | unit | sentence | 0.900 | 1.000 | 1.000 |" in body  # gates, attributes
    assert '{"generate_sts": ["abc123"]}' in body and "`persona_id`, `task_id`, `example_id`" in body
    assert body.count("```json\n{\n \"task_type\"") == hub.SAMPLE_ROWS
    loaded = load_dataset(str(tmp_path / "store" / "datasets" / "synth" / "run-1"), split="train")
    assert loaded.num_rows == len(ROWS) and loaded.column_names == DATASET.names
    assert loaded[1]["mined_negatives"] == ["mined 1", "other"] and loaded[1]["negative"] is None


class StandInHub(BaseHTTPRequestHandler):
    """The few endpoints huggingface_hub's create_repo and upload_folder call, recording each."""
    calls: list = []

    def log_message(self, *args):
        pass

    def reply(self, body: dict, code: int = 200):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.calls.append((self.path, self.headers.get("authorization"), body))
        base = f"http://127.0.0.1:{self.server.server_port}"
        if self.path == "/api/repos/create":
            asked = json.loads(body)
            kind = "" if asked.get("type", "model") == "model" else f"{asked['type']}s/"  # models: no prefix
            return self.reply({"url": f"{base}/{kind}{asked['organization']}/{asked['name']}"})
        if self.path == "/api/validate-yaml":
            return self.reply({"errors": [], "warnings": []})
        if "/preupload/" in self.path:
            return self.reply({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                         for f in json.loads(body)["files"]]})
        if "/commit/" in self.path:
            repo = self.path.removeprefix("/api/").split("/commit/")[0].removeprefix("models/")
            return self.reply({"commitUrl": f"{base}/{repo}/commit/{'a' * 40}", "commitOid": "a" * 40})
        self.reply({"error": "not here"}, 404)


@pytest.fixture
def stand_in(monkeypatch):
    StandInHub.calls = []
    with Loopback(StandInHub, path="") as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", "hf_from_the_environment")
        import huggingface_hub.constants as constants
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        yield server.url


def committed_files(body: bytes) -> dict[str, bytes]:
    lines = [json.loads(line) for line in body.decode().splitlines()]
    return {x["value"]["path"]: base64.b64decode(x["value"]["content"]) for x in lines if x["key"] == "file"}


def test_publish_pushes_a_private_dataset_with_its_card_and_stage_configs(tmp_path, stand_in, capsys):
    store, path = published(tmp_path)
    main(["publish", store.root, "--push-to-hub", "me/bank-synth", "--version", "run-1", "--with-stages"])
    paths = [p for p, _, _ in StandInHub.calls]
    assert paths == ["/api/repos/create", "/api/validate-yaml", "/api/datasets/me/bank-synth/preupload/main",
                     "/api/datasets/me/bank-synth/commit/main"]
    assert all(auth == "Bearer hf_from_the_environment" for _, auth, _ in StandInHub.calls)
    assert json.loads(StandInHub.calls[0][2]) == {"name": "bank-synth", "organization": "me",
                                                  "visibility": "private", "type": "dataset"}
    files = committed_files(StandInHub.calls[-1][2])
    assert set(files) == {"README.md", DATA_FILE, "card.json", "quality.json", "stages/examples/part-00000.parquet",
                          "LICENSE"}  # licence `other`: the card's license_link leads somewhere
    assert b"Qwen/Qwen2.5-7B-Instruct" in files["LICENSE"]
    assert store.read_json(f"{path}/hub.json")["repo_id"] == "me/bank-synth"  # for models trained on it
    assert files[DATA_FILE] == store.read_bytes(f"{path}/{DATA_FILE}")
    meta = front(files["README.md"].decode())
    assert [c["config_name"] for c in meta["configs"]] == ["default", "examples"]
    assert "pushed: " in capsys.readouterr().out


def test_publish_model_pushes_the_folder(tmp_path, stand_in):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "README.md").write_text("---\nlibrary_name: sentence-transformers\n---\ncard\n")
    (folder / "config_sentence_transformers.json").write_text('{"prompts": {"query": ""}}')
    main(["publish-model", str(folder), "--store", str(tmp_path), "--push-to-hub", "me/bank-minilm", "--public"])
    assert json.loads(StandInHub.calls[0][2])["visibility"] == "public"
    files = committed_files(StandInHub.calls[-1][2])
    assert set(files) == {"README.md", "config_sentence_transformers.json"}
    assert "datasets" not in front(files["README.md"].decode())  # trained on nothing pushed: none named


def test_a_pushed_models_card_names_the_hub_dataset_it_was_trained_on(tmp_path, stand_in):
    store, path = published(tmp_path)
    model = store.path("models", "synth", "run-1-abc", "model")
    store.write_bytes(f"{model}/README.md", b"---\nlibrary_name: sentence-transformers\n---\ncard\n")
    trained = {"dataset": {"path": path, "sha256": store.read_json(f"{path}/card.json")["sha256"]}}
    store.write_json(store.path("models", "synth", "run-1-abc", "train_report.json"), trained)
    main(["publish", store.root, "--push-to-hub", "me/bank-synth", "--version", "run-1"])
    main(["publish-model", model, "--store", store.root, "--push-to-hub", "me/bank-minilm"])
    card = front(committed_files(StandInHub.calls[-1][2])["README.md"].decode())
    assert card == {"library_name": "sentence-transformers", "datasets": ["me/bank-synth"]}
    main(["publish-model", model, "--store", store.root, "--push-to-hub", "me/bank-minilm", "--dataset", "me/other"])
    assert front(committed_files(StandInHub.calls[-1][2])["README.md"].decode())["datasets"] == ["me/other"]
    store.write_json(store.path("models", "synth", "run-1-abc", "train_report.json"),
                     {"dataset": {"path": path, "sha256": "other rows"}})  # the set was republished since
    main(["publish-model", model, "--store", store.root, "--push-to-hub", "me/bank-minilm"])
    assert "datasets" not in front(committed_files(StandInHub.calls[-1][2])["README.md"].decode())
