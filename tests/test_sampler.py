import collections

from embedfactory.training.sampler import semi_homogeneous_batches


def rows_of(counts: dict[str, int]) -> list[dict]:
    return [{"task": t, "anchor": f"{t}-q{i}", "positive": f"{t}-p{i}", "negative": None}
            for t, n in counts.items() for i in range(n)]


def test_every_row_once_and_most_of_each_full_batch_from_one_task():
    rows = rows_of({"a": 200, "b": 150, "c": 100, "d": 50})
    batches = semi_homogeneous_batches(rows, "task", batch_size=20, homogeneous_ratio=0.8, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(len(rows)))
    full = [b for b in batches if len(b) == 20]
    assert len(full) >= 0.8 * len(batches)
    shares = [collections.Counter(rows[i]["task"] for i in b).most_common(1)[0][1] / 20 for b in full]
    assert sum(s == 0.8 for s in shares) / len(shares) > 0.8  # 16 of 20 from one task
    assert all(s >= 0.8 for s in shares)
    assert sum(len(collections.Counter(rows[i]["task"] for i in b)) > 1 for b in full) / len(full) > 0.9


def test_no_text_twice_in_a_batch():
    rows = [{"task": "cls", "anchor": f"text {i}", "positive": ["billing", "refund", "card"][i % 3],
             "negative": None} for i in range(30)]
    batches = semi_homogeneous_batches(rows, "task", batch_size=8, homogeneous_ratio=0.75, seed=0)
    assert sorted(i for b in batches for i in b) == list(range(30))
    for batch in batches:
        positives = [rows[i]["positive"] for i in batch]
        assert len(positives) == len(set(positives))
