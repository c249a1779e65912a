"""Flow `eval` on real held-out data: a BEIR-format slice of Cranfield and capped STS-b, with the
embedded MiniLM against a copy fine-tuned in the store; scores are kept and reused."""
import json

import pytest
from test_trainer import ROWS

from embedfactory.config import TrainConfig
from embedfactory.eval import sets as evalsets
from embedfactory.eval.sets import EvalSet
from flows.eval import evaluate


def cranfield_slice_as_beir(folder, queries=15):
    """The first `queries` Cranfield queries and every document judged for them, in BEIR format."""
    data = evalsets.load_cranfield(evalsets.root(evalsets.SHIPPED["cranfield"]))
    keep = sorted(data.qrels, key=int)[:queries]
    docs = sorted({d for q in keep for d in data.qrels[q]}, key=int)
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": data.corpus[d]}) + "\n"
                                                 for d in docs))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": data.queries[q]}) + "\n"
                                                  for q in keep))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{g}\n" for q in keep for d, g in data.qrels[q].items()))
    beir = EvalSet(name="cran-beir", kind="retrieval", format="beir", path=str(folder), split="test",
                   source="Cranfield, first 15 queries", sha256=None, main_score="ndcg@10")
    beir = beir.model_copy(update={"sha256": evalsets.checksum(beir)})
    path = folder.parent / "cran-beir.json"
    path.write_text(beir.model_dump_json())
    return str(path)


@pytest.mark.slow
def test_eval_flow_compares_base_and_fine_tuned_and_reuses_scores(tmp_path, prefect_api):
    from prefect.client.orchestration import get_client

    from embedfactory.training.trainer import train_contrastive

    model = tmp_path / "store" / "models" / "tiny" / "model"
    train_contrastive(ROWS, TrainConfig(epochs=3, batch_size=4, learning_rate=1e-4), str(model))
    sts = tmp_path / "stsb-300.json"
    sts.write_text(evalsets.SHIPPED["stsb-test"].model_copy(update={"name": "stsb-300", "max_queries": 300})
                   .model_dump_json())
    sets = [cranfield_slice_as_beir(tmp_path / "cran-beir"), str(sts)]
    report = evaluate(str(model), store=str(tmp_path / "store"), eval_sets=sets)

    rows = {(r["set"], r["metric"]): r for r in report["rows"]}
    assert {k for k, r in rows.items() if r["main"]} == {("cran-beir", "ndcg@10"), ("stsb-300", "spearman")}
    assert 0.3 < rows["cran-beir", "ndcg@10"]["base"] < 0.9 and 0.7 < rows["stsb-300", "spearman"]["base"] < 0.95
    assert all(r["delta"] == pytest.approx(r["fine_tuned"] - r["base"], abs=2e-4) for r in rows.values())
    assert rows["stsb-300", "spearman"]["fine_tuned"] != rows["stsb-300", "spearman"]["base"]
    saved = json.loads(open(report["path"]).read())
    assert saved["base"][0]["metrics"]["queries"] == 15 and saved["base"][1]["metrics"]["pairs"] == 300
    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts(limit=20)
    tables = [a for a in artifact if a.key == "eval-report"]
    assert tables and "cran-beir" in str(tables[0].data)

    stored = sorted(p for p in (tmp_path / "store" / "evals").glob("*.json") if not p.name.startswith("report-"))
    assert len(stored) == 4  # (base, fine-tuned) x (cran-beir, stsb-300)
    mtimes = [p.stat().st_mtime_ns for p in stored]
    again = evaluate(str(model), store=str(tmp_path / "store"), eval_sets=sets)
    assert again["rows"] == report["rows"]
    assert [p.stat().st_mtime_ns for p in stored] == mtimes  # scores reused, not recomputed


def test_eval_flow_refuses_an_altered_set_before_loading_a_model(tmp_path, prefect_api):
    altered = tmp_path / "sts.csv"
    original = evalsets.root(evalsets.SHIPPED["stsb-test"]).read_bytes()
    altered.write_bytes(original.replace(b"\t", b"\t ", 1))
    spec = tmp_path / "sts.json"
    spec.write_text(evalsets.SHIPPED["stsb-test"].model_copy(update={"path": str(altered)}).model_dump_json())
    with pytest.raises(ValueError, match="stsb-test.*expected sha256"):
        evaluate("no/such-model", store=str(tmp_path / "store"), eval_sets=[str(spec)])
    with pytest.raises(ValueError, match="unknown evaluation set 'nope'"):
        evaluate("no/such-model", store=str(tmp_path / "store"), eval_sets=["nope"])
    assert not (tmp_path / "store" / "evals").exists()


def test_eval_and_train_flows_name_a_bad_model_before_loading_anything(tmp_path, prefect_api):
    from embedfactory.config import TrainConfig
    from flows.train import train

    with pytest.raises(ValueError, match=r"- baseline: 'embedded:all-MiniLM-L6' is not an embedded model"):
        evaluate(str(tmp_path), baseline="embedded:all-MiniLM-L6", store=str(tmp_path / "store"),
                 eval_sets=["stsb-test"])
    with pytest.raises(ValueError, match=r"1 problem\(s\) before any model call:\n- config.guide_model: 'mpnet' is "
                                         "neither a folder that exists nor a Hub id"):
        train(str(tmp_path / "store"), config=TrainConfig(guide_model="mpnet"))  # no dataset needed to tell
    assert not (tmp_path / "store" / "evals").exists() and not (tmp_path / "store" / "models").exists()
