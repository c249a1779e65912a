import json
import math

import numpy as np
import pytest
import torch
from test_trainer import ROWS

from embedfactory.config import EMBEDDED_EMBEDDER, TrainConfig
from embedfactory.eval import sets as evalsets
from embedfactory.eval.heldout import embedders, model_identity, pair_retrieval, score_model
from embedfactory.eval.sets import EvalSet, RetrievalData
from embedfactory.filter.consistency import encoder
from embedfactory.models import embedding_model_path
from embedfactory.store import Store
from embedfactory.training.trainer import hard_negatives, train_contrastive

VECTORS = {"q1": [1, 0], "q2": [0, 1], "d1": [0.9, 0.1], "d2": [0.8, 0.6], "d3": [0.1, 0.9]}


def embed(texts):
    vectors = np.array([VECTORS[t] for t in texts], dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_pair_retrieval_scores_ranks():
    # q1's document d2 ranks 2nd (behind d1); q2's document d3 ranks 1st
    scores = pair_retrieval(embed, ["q1", "q2"], ["d1", "d2", "d3"], relevant=[1, 2])
    assert scores["mrr@10"] == 0.75 and scores["recall@10"] == 1.0
    assert math.isclose(scores["ndcg@10"], (1 / math.log2(3) + 1) / 2)


def test_training_negatives_take_the_generated_one_then_the_mined_ones():
    row = {"negative": "gen", "mined_negatives": ["m1", "m2", "m3"]}
    assert hard_negatives(row, 2) == ["gen", "m1", "m2"]
    assert hard_negatives({"negative": None, "mined_negatives": None}, 3) == []
    assert hard_negatives(row, None) == ["gen", "m1", "m2", "m3"]  # null: every mined negative the row has


STS = [("A man is playing a guitar.", "A person plays an instrument.", 4.2),
       ("A cat sleeps on the sofa.", "The stock market fell today.", 0.1),
       ("Two kids kick a ball in a park.", "Children are playing football outside.", 4.5),
       ("The train leaves at noon.", "A woman slices an onion.", 0.3),
       ("She is reading a novel.", "A woman reads a book.", 4.6),
       ("The bridge was closed for repairs.", "Repairs shut the bridge.", 4.8),
       ("He cooks pasta for dinner.", "A dog runs along the beach.", 0.0),
       ("It is raining in the city.", "Rain is falling downtown.", 4.4),
       ("The company hired new engineers.", "Engineers were recruited by the firm.", 4.1),
       ("A plane lands at the airport.", "Someone is knitting a scarf.", 0.2)]

CORPUS = {"d1": "Resetting a card PIN at an ATM or in the banking app.",
          "d2": "Lift coefficients of wings at low Reynolds numbers.",
          "d3": "How to dispute a duplicate card charge.",
          "d4": "Tracking the delivery of a new debit card.",
          "d5": "Drag of bodies in supersonic flow.",
          "d6": "Opening a savings account online."}
QUERIES = {"1": "forgot my PIN", "2": "wing lift at low speed", "3": "I was charged twice",
           "4": "where is my new card"}
QRELS = {"1": "d1", "2": "d2", "3": "d3", "4": "d4"}


def sts_set(tmp_path) -> EvalSet:
    path = tmp_path / "sts.jsonl"
    path.write_text("".join(json.dumps({"sentence1": a, "sentence2": b, "score": s}) + "\n" for a, b, s in STS))
    return EvalSet(name="tiny-sts", kind="sts", format="sts-jsonl", path=str(path), source="test", split="test",
                   sha256=None, main_score="spearman")


def retrieval_set(tmp_path) -> EvalSet:
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n"
                                                 for d, t in CORPUS.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                               + "".join(f"{q}\t{d}\t1\n" for q, d in QRELS.items()))
    return EvalSet(name="tiny-beir", kind="retrieval", format="beir", path=str(folder), source="test", split="test",
                   sha256=None, main_score="ndcg@10")


@pytest.mark.slow
def test_a_model_folder_is_scored_by_its_content_not_its_name(tmp_path):
    from sentence_transformers import SentenceTransformer

    store, evalset, folder = Store(str(tmp_path / "store")), sts_set(tmp_path), str(tmp_path / "model")
    model = SentenceTransformer(embedding_model_path(EMBEDDED_EMBEDDER), device="cpu")
    model.save(folder)
    runs = []
    first = score_model(store, folder, [evalset], runs.append)
    assert score_model(store, folder, [evalset], runs.append) == first and len(runs) == 1
    # the same files in the store are the same model: its scores are reused
    store.upload_dir(folder, store.path("models", "m", "model"))
    assert model_identity(store, store.path("models", "m", "model")) == model_identity(store, folder)
    in_store = score_model(store, store.path("models", "m", "model"), [evalset], runs.append)
    assert in_store[0]["score"] == first[0]["score"] and in_store[0]["model"] == store.path("models", "m", "model")
    assert len(runs) == 1
    # retrained into the same folder: scored again
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save(folder)
    second = score_model(store, folder, [evalset], runs.append)
    assert len(runs) == 2 and second[0]["model_identity"] != first[0]["model_identity"]
    assert second[0]["score"] != first[0]["score"]
    # the score is Spearman's correlation of the pairs' cosines with the gold scores, worked out here by hand
    from scipy.stats import spearmanr

    data = evalsets.load(evalset)
    left, right = (model.encode(list(side), normalize_embeddings=True) for side in zip(*data.pairs))
    by_hand = spearmanr((left * right).sum(-1), data.scores).statistic
    assert second[0]["score"] == pytest.approx(by_hand, abs=1e-6)
    assert model_identity(store, EMBEDDED_EMBEDDER) == EMBEDDED_EMBEDDER  # names stay names


@pytest.mark.slow
def test_a_trained_model_carries_its_query_prompt_and_evaluation_applies_it(tmp_path):
    from sentence_transformers import SentenceTransformer

    cfg = TrainConfig(epochs=1, batch_size=4, learning_rate=1e-4, device="cpu",
                      query_template="Instruct: {instruction}\nQuery: {query}")
    folder = str(tmp_path / "model")
    train_contrastive(ROWS, cfg, folder)
    prompt = "Instruct: Given a question, retrieve passages that answer it\nQuery: "
    saved = json.loads((tmp_path / "model" / "config_sentence_transformers.json").read_text())
    assert saved["prompts"]["query"] == prompt == cfg.query_prompt() and not saved["prompts"].get("document")

    store, evalset = Store(str(tmp_path / "store")), retrieval_set(tmp_path)
    got = score_model(store, folder, [evalset], log=lambda _: None)[0]["metrics"]
    # by hand: queries prefixed with the prompt, everything embedded bare
    model = SentenceTransformer(folder, device="cpu")
    bare = encoder(model)
    data = evalsets.load(evalset)
    prefixed = RetrievalData(data.corpus, {q: prompt + t for q, t in data.queries.items()}, data.qrels)
    assert got == pytest.approx(evalsets.retrieval_scores(bare, prefixed))
    texts = list(QUERIES.values())
    np.testing.assert_allclose(embedders(model).queries(texts), bare([prompt + t for t in texts]), atol=1e-5)
    np.testing.assert_allclose(model.encode(texts, prompt_name="query"), bare([prompt + t for t in texts]), atol=1e-5)
    # sentence-transformers' own card, its YAML front matter first, written without the Hub
    import yaml
    readme = (tmp_path / "model" / "README.md").read_text()
    assert readme.startswith("---\n")
    front = yaml.safe_load(readme.split("---\n")[1])
    assert front["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert front["library_name"] == "sentence-transformers" and front["pipeline_tag"] == "sentence-similarity"
    assert {"embedfactory", "synthetic-data", cfg.loss} <= set(front["tags"])
    from embedfactory.training.job import with_section
    placed = with_section(readme, "## Training (embedfactory)\n")
    assert placed.split("---\n")[1] == readme.split("---\n")[1]  # the front matter stays first, whole
    assert placed.split("---\n", 2)[2].lstrip().startswith("## Training (embedfactory)")
    assert with_section("# a card", "## Training (embedfactory)\n") == "## Training (embedfactory)\n\n# a card"
    from embedfactory.training.job import with_eval_results
    rows = [{"set": "cranfield", "metric": "ndcg@10", "base": 0.38, "fine_tuned": 0.41}]
    scored = yaml.safe_load(with_eval_results(placed, rows, "m").split("---\n")[1])
    assert scored["base_model"] == front["base_model"]  # the rest of the front matter kept
    assert scored["metrics"] == ["ndcg@10"]
    assert scored["model-index"][0]["results"][0]["metrics"] == [
        {"type": "ndcg@10", "value": 0.41, "name": "ndcg@10 (base 0.38)"}]
    np.testing.assert_allclose(embedders(model).documents(texts), bare(texts), atol=1e-5)
    assert not np.allclose(embedders(model).queries(texts), bare(texts), atol=1e-3)
    # the base model has no prompts: its queries go in bare
    base = SentenceTransformer(embedding_model_path(EMBEDDED_EMBEDDER), device="cpu")
    np.testing.assert_allclose(embedders(base).queries(texts), encoder(base)(texts), atol=1e-5)


@pytest.mark.slow
def test_evaluation_prefixes_queries_with_the_models_query_prompt_and_nothing_else(tmp_path):
    from sentence_transformers import SentenceTransformer

    # a prompt that drags every query towards aerodynamics: the scores must show it
    prompt = "Aerodynamics of wings, lift and drag in supersonic flow: "
    model = SentenceTransformer(embedding_model_path(EMBEDDED_EMBEDDER), device="cpu")
    model.prompts = {"query": prompt, "document": ""}
    model.save(str(tmp_path / "prompted"))
    store, sets = Store(str(tmp_path / "store")), [retrieval_set(tmp_path), sts_set(tmp_path)]
    prompted = score_model(store, str(tmp_path / "prompted"), sets, log=lambda _: None)
    plain = score_model(store, EMBEDDED_EMBEDDER, sets, log=lambda _: None)
    bare = encoder(model)
    data = evalsets.load(sets[0])
    prefixed = RetrievalData(data.corpus, {q: prompt + t for q, t in data.queries.items()}, data.qrels)
    by_hand = evalsets.retrieval_scores(bare, prefixed)
    assert prompted[0]["metrics"] == pytest.approx(by_hand)
    assert prompted[0]["score"] < plain[0]["score"] == 1.0
    assert prompted[1]["score"] == pytest.approx(plain[1]["score"], abs=1e-6)  # STS pairs go in bare
