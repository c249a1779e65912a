import json

from embedfactory.config import Price
from embedfactory.llm.costs import usage_table
from embedfactory.report.quality import quality_report, to_markdown
from embedfactory.schemas import Reason
from embedfactory.store import ShardRecord


def verdict(i, kept, task_type="retrieval", drop_reason=None, revision="revised"):
    return {"task_type": task_type, "status": "ok", "reject_reason": None, "kept": kept,
            "drop_reason": drop_reason, "drop_kind": drop_reason and drop_reason.kind,
            "drop_name": drop_reason and drop_reason.name, "revision_status": revision, "anchor": "a b c",
            "positive": "one two three four", "negative": None if task_type == "sts" else "x y",
            "attributes": json.dumps({"difficulty": "PhD" if i % 2 else "college"})}


def test_report_counts_rejections_drops_duplicates_revisions_and_cost():
    examples = [verdict(0, True), {"task_type": "sts", "status": "rejected",
                                   "reject_reason": "schema: S2: Field required"}]
    revised = [verdict(0, True), verdict(1, True, revision="unchanged"),
               {**verdict(2, True, revision="rejected"), "reject_reason": "invalid JSON: Expecting value"}]
    verdicts = [verdict(0, True), verdict(1, True, "sts"),
                verdict(2, False, drop_reason=Reason("ranking", "rank", "positive ranked 9 of 40 (top-k 3)")),
                verdict(3, False, drop_reason=Reason("duplicate", "exact", "e0"))]
    rows = {"examples": examples, "revised": revised, "verdicts": verdicts}
    records = {"examples": [ShardRecord("0", "f", 1, llm_calls=3, prompt_tokens=1000, completion_tokens=500,
                                           cached_tokens=250, schema_fallbacks=1)],
               "revised": [ShardRecord("0", "f", 3)],
               "verdicts": [ShardRecord("0", "f", 2, extra={"duplicates_exact": 1, "duplicates_near": 0,
                                                                   "duplicates_of_published": 1})]}
    usage = usage_table(records, {"examples": "gpt-x", "revised": "gpt-x", "verdicts": "m"},
                        {"gpt-x": Price(input_per_million=2.0, output_per_million=8.0)})
    report = quality_report(rows, records, usage)
    assert usage == [{"stage": "examples", "model": "gpt-x", "calls": 3, "prompt_tokens": 1000,
                      "completion_tokens": 500, "cached_prompt_tokens": 250, "prompt_cache_hit_rate": 0.25,
                      "schema_fallbacks": 1, "cost_usd": 0.006}]
    assert report["kept"] == 2 and report["by_task_type"]["kept"] == {"retrieval": 1, "sts": 1}
    assert report["rejection_reasons"]["examples"] == {"schema: S2": 1}
    assert report["filter_drops"] == {"ranking": 1, "exact duplicate": 1}
    # a duplicate of a published set is also an exact or near one: counted once in the rate
    assert report["duplicates"] == {"duplicates_exact": 1, "duplicates_near": 0, "duplicates_of_published": 1,
                                    "rate": 0.25}
    assert report["revisor"]["change_rate"] == 0.5
    assert report["revisor"]["failed_reasons"] == {"invalid JSON": 1}
    # histograms against the recipe: drawn (generation prompts) and kept; absent optional values counted
    assert report["attributes"]["retrieval"]["difficulty"]["college"] == {"reference": 0.167, "drawn": 1.0, "kept": 1.0}
    assert report["attributes"]["retrieval"]["difficulty"]["(not asked)"] == {"reference": 0.5, "drawn": 0.0, "kept": 0.0}
    assert report["attributes"]["sts"]["difficulty"]["PhD"] == {"reference": 0.0, "drawn": 0.0, "kept": 1.0}
    from embedfactory.report.quality import attribute_lines
    retrieval_difficulty = [line for line in attribute_lines(report["attributes"])
                            if line.split()[:2] == ["retrieval", "difficulty"]]
    assert len(retrieval_difficulty) == 1
    assert "(not asked): 0.00/0.50" in retrieval_difficulty[0] and "college: 1.00/0.17" in retrieval_difficulty[0]
    assert report["lengths_in_words"]["positive"]["p50"] == 4
    markdown = to_markdown(report)
    assert "| examples | gpt-x | 3 |" in markdown
    assert "| retrieval | difficulty | college | 0.167 | 1.000 | 1.000 |" in markdown


def test_a_run_with_aligned_generators_divides_their_teacher_calls_by_its_examples(tmp_path):
    """SPEED's economics where the examples are made: the align run that produced the senior (and
    the revisor) spent its teacher calls once; a synthesis run divides them by what it generated."""
    from embedfactory.report.economics import teacher_calls_per_example
    from embedfactory.store import Store

    store = Store(str(tmp_path))
    store.write_json(store.path("registry", "generators.json"),
                     {"aligned-senior": {"role": "senior", "run_id": "align-1"},
                      "aligned-revisor": {"role": "revisor", "run_id": "align-1"}})
    store.write_json(store.path("runs", "align-1", "align_report.json"),
                     {"teacher_calls": [{"stage": "examples", "teacher_calls": 40},
                                        {"stage": "total", "teacher_calls": 90}], "models": {}})
    out = teacher_calls_per_example(store, ["aligned-senior", "aligned-revisor"], 1800)
    assert out["teacher_calls"] == 90 and out["align_runs"] == ["align-1"]  # one align run, counted once
    assert out["teacher_calls_per_example"] == 0.05 and out["speed_calls_per_example"] == round(45_000 / 920_000, 6)
    assert teacher_calls_per_example(store, ["Qwen/Qwen2.5-7B-Instruct"], 1800) is None
    markdown = to_markdown({**quality_report({"verdicts": []}, {"verdicts": []}, []), "alignment": out})
    assert ("90 teacher calls (align run(s) align-1: 90, this run's brainstorm: 0) for 1800 examples "
            "generated: 0.05 per example") in markdown
    # SPEED's teacher also brainstorms the tasks: a run's own brainstormer calls are added
    spent = teacher_calls_per_example(store, ["aligned-senior"], 1800, brainstorm_calls=36)
    assert (spent["teacher_calls"], spent["align_teacher_calls"], spent["brainstorm_teacher_calls"]) == (126, 90, 36)
    assert spent["teacher_calls_per_example"] == 0.07


def test_grounded_rows_stay_out_of_the_brainstormed_attribute_histograms(tmp_path):
    from embedfactory.report.economics import teacher_calls_per_example
    from embedfactory.report.quality import attribute_histograms
    from embedfactory.store import Store

    grounded = {"task_type": "retrieval", "source_id": "passage-1", "attributes": json.dumps({"difficulty": "PhD"})}
    assert attribute_histograms([], [grounded]) == {}
    # an align run cut short (registered, no report yet) is not counted rather than failing the report
    store = Store(str(tmp_path))
    store.write_json(store.path("registry", "generators.json"), {"x-senior": {"role": "senior", "run_id": "align-2"}})
    assert teacher_calls_per_example(store, ["x-senior"], 10) is None


def test_drop_reasons_are_typed_read_as_their_text_and_counted_from_their_columns():
    """A drop reason keeps its kind and name through pickling and Arrow; the report counts the stored
    kind and name, whatever the text says."""
    import pickle

    import pyarrow as pa

    gate = Reason("gate", "copy", "query is a near copy of the passage (word overlap 0.91)")
    assert gate == "gate copy: query is a near copy of the passage (word overlap 0.91)"
    back = pickle.loads(pickle.dumps(gate))
    assert (back.kind, back.name, back.detail, back) == ("gate", "copy", gate.detail, gate)
    assert pa.array([gate, None]).to_pylist() == [str(gate), None]
    near = Reason("duplicate", "near", "e7 (jaccard 0.83)", published=True)
    assert near == "near duplicate: e7 (jaccard 0.83)" and near.published
    rows = [verdict(0, False, drop_reason=gate), verdict(1, False, drop_reason=near),
            {**verdict(2, False), "drop_reason": "text that names no gate", "drop_kind": "gate", "drop_name": "echo"}]
    report = quality_report({"verdicts": rows}, {"verdicts": []}, [])
    assert report["filter_drops"] == {"gate copy": 1, "near duplicate": 1, "gate echo": 1}
