from embedfactory.filter.dedupe import find_duplicates


def row(i, anchor, positive):
    return {"example_id": f"e{i}", "anchor": anchor, "positive": positive}


def test_exact_near_and_published_duplicates_are_named_and_first_copies_kept():
    text = ("Tidal marshes store carbon in waterlogged soils where decomposition is slow, and "
            "restoring them returns that storage within a few decades of reflooding.")
    rows = [
        row(0, "how do marshes store carbon", text),
        row(1, "How do marshes store carbon?", text.upper()),                       # exact after normalizing
        row(2, "how do marshes store carbon", text.replace("slow", "slower")),  # near
        row(3, "what eats krill", "Baleen whales, penguins and seals feed on krill."),
        row(4, "best sourdough starter", "Feed the starter flour and water daily."),  # repeats a published row
    ]
    published = [("published synth/v1#0", {"anchor": "best sourdough starter",
                                         "positive": "Feed the starter flour and water daily!"})]
    reasons = find_duplicates(rows, published, threshold=0.7)
    assert reasons[0] is None and reasons[3] is None
    assert reasons[1] == "exact duplicate: e0"
    assert reasons[2].startswith("near duplicate: e0 (jaccard 0.")
    assert reasons[4] == "exact duplicate: published synth/v1#0"


def test_unrelated_rows_are_all_kept():
    rows = [row(i, f"question {i} about topic {i * 7}", f"answer number {i} with words {i * 13} {i * 17}")
            for i in range(50)]
    assert find_duplicates(rows, [], threshold=0.8) == [None] * 50


# ---- the duplicates stage: a persistent index, linear passes, fingerprints from named datasets only ----
import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402

from embedfactory import schemas  # noqa: E402
from embedfactory.config import SynthParams  # noqa: E402
from embedfactory.filter import dedupe  # noqa: E402
from embedfactory.publish import dataset as publish  # noqa: E402
from embedfactory.store import ShardRecord, StageDir, Store  # noqa: E402
from embedfactory.synth import duplicates, pipeline, preflight  # noqa: E402

SHARDS = [[("how do tides work", "The moon's gravity pulls the oceans into two bulges."),
           ("best sourdough starter", "Feed the starter flour and water daily.")],
          [("How do tides work?", "The moon's gravity pulls the oceans into two bulges!"),  # exact copy of shard 0
           ("what eats krill", "Baleen whales, penguins and seals feed on krill.")]]


def commit_shards(store: str, shards=SHARDS) -> list[ShardRecord]:
    revised = StageDir(Store(store), "run-a", "revised")
    return [revised.commit(pa.Table.from_pylist(
        [{"example_id": f"e{s}{i}", "anchor": a, "positive": p, "status": "ok"} for i, (a, p) in enumerate(rows)],
        schema=schemas.REVISED), ShardRecord(key=f"{s:05d}", fingerprint="f", rows=len(rows), stage="revised"))
        for s, rows in enumerate(shards)]


def publish_rows(store: Store, name: str, version: str, rows: list[tuple[str, str]]) -> None:
    """A dataset as publish.publish lays it out (the columns the duplicates stage reads)."""
    path = publish.dataset_dir(store, name, version)
    sha = store.write_table(f"{path}/{publish.DATA_FILE}", pa.table({"anchor": [a for a, _ in rows],
                                                                     "positive": [p for _, p in rows]}))
    store.write_json(f"{path}/card.json", {"name": name, "version": version, "sha256": sha, "rows": len(rows)})
    store.write_json(store.path("datasets", name, "latest.json"), {"version": version})


@pytest.fixture
def hashed(monkeypatch):
    """Counts the texts hashed into signatures."""
    count = {"n": 0}
    real = dedupe.signature

    def counted(text):
        count["n"] += 1
        return real(text)

    monkeypatch.setattr(dedupe, "signature", counted)
    return count


def find(params: SynthParams, run_id: str, run_token: str, made: list) -> list:
    """The stage as the run engine calls it: the store and its slice of the parameters."""
    return duplicates.find(Store(params.store), duplicates.config(params), run_id, run_token, made)


def against(params: SynthParams, run_id: str) -> list[dict]:
    return duplicates.datasets_against(Store(params.store), duplicates.config(params)["avoid"], run_id)


def test_the_stage_names_earlier_copies_and_a_rerun_hashes_nothing(tmp_path, hashed):
    params = SynthParams(store=str(tmp_path))
    made = commit_shards(str(tmp_path))
    first = find(params, "run-a", "t1", made)
    assert [r.dropped for r in first] == [0, 1] and hashed["n"] == 4
    assert duplicates.reasons(Store(str(tmp_path)), "run-a", first[1:]) == {"e10": "exact duplicate: e00"}
    again = find(params, "run-a", "t2", made)  # resumed: the index is read back, not re-hashed
    assert hashed["n"] == 4 and [r.run_token for r in again] == ["t1", "t1"]
    changed = commit_shards(str(tmp_path), [SHARDS[0], [SHARDS[1][1], ("Best sourdough starter!", SHARDS[0][1][1])]])
    third = find(params, "run-a", "t3", changed)  # shard 1 changed: it alone is checked again,
    assert [r.run_token for r in third] == ["t1", "t3"] and hashed["n"] == 6  # against shard 0 read back
    assert duplicates.reasons(Store(str(tmp_path)), "run-a", third[1:]) == {"e11": "exact duplicate: e01"}
    with pytest.raises(ValueError, match="one 'duplicates' shard"):
        duplicates.reasons(Store(str(tmp_path)), "run-a", made)


def test_only_the_datasets_named_are_avoided_and_only_they_enter_the_fingerprint(tmp_path, hashed):
    store = Store(str(tmp_path))
    made = commit_shards(str(tmp_path))
    publish_rows(store, "faq", "v1", [("best sourdough starter", "Feed the starter flour and water daily!")])
    none = SynthParams(store=str(tmp_path), filter={"dedupe_against": []})
    avoiding = SynthParams(store=str(tmp_path), filter={"dedupe_against": ["faq"]})

    def fingerprints(params):
        return list(duplicates.fingerprints(duplicates.config(params), made, against(params, "run-a")))

    before = fingerprints(none)
    publish_rows(store, "other", "v9", [("what eats krill", "Baleen whales, penguins and seals feed on krill.")])
    assert fingerprints(none) == before and fingerprints(avoiding) != before  # only what it was told
    records = find(avoiding, "run-a", "t", made)
    (first,), (second,) = (duplicates.reasons(store, "run-a", r).items() for r in (records[:1], records[1:]))
    assert first == ("e01", "exact duplicate: published faq/v1#0") and second == ("e10", "exact duplicate: e00")
    # typed from the stored columns: counted by kind, name and whether a published row came first
    assert (first[1].kind, first[1].name, first[1].published) == ("duplicate", "exact", True)
    assert (second[1].kind, second[1].name, second[1].published) == ("duplicate", "exact", False)  # krill: not named
    assert records[0].extra == {"duplicates_exact": 1, "duplicates_near": 0}
    n = hashed["n"]
    find(avoiding, "run-b", "t", [])  # the dataset's signatures were kept in the store
    assert hashed["n"] == n
    assert [c["version"] for c in against(
        SynthParams(store=str(tmp_path), filter={"dedupe_against": ["other/v9", "faq"]}), "v1")] == ["v9"]


def test_by_default_a_run_avoids_the_earlier_versions_of_its_own_dataset(tmp_path):
    store = Store(str(tmp_path))
    params = SynthParams(store=str(tmp_path), dataset_name="faq")
    assert against(params, "run-a") == [] and not [
        p for p in preflight.problems(params) if p.startswith("filter.dedupe_against")]  # a new store: none
    publish_rows(store, "faq", "v1", [("q", "a")])
    publish_rows(store, "faq", "run-a", [("q", "a")])  # the run's own version is not avoided
    assert [c["version"] for c in against(params, "run-a")] == ["v1"]
    # what it avoids is in its run id: the default (null), none ([]) and a list are three runs
    ids = {pipeline.default_run_id(SynthParams(filter={"dedupe_against": refs})) for refs in (None, [], ["x"])}
    assert len(ids) == 3


def test_a_dataset_to_avoid_that_is_not_published_fails_the_preflight(tmp_path):
    params = SynthParams(store=str(tmp_path), filter={"dedupe_against": ["synth", "synth/v3"]})
    found = [p for p in preflight.problems(params) if p.startswith("filter.dedupe_against")]
    assert len(found) == 1 and "'synth', 'synth/v3'" in found[0]
    publish_rows(Store(str(tmp_path)), "synth", "v3", [("q", "a")])
    assert not [p for p in preflight.problems(params) if p.startswith("filter.dedupe_against")]
    with pytest.raises(ValueError, match="name/version"):
        SynthParams(filter={"dedupe_against": ["a/b/c"]})
