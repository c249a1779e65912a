from embedfactory.dedupe import find_duplicates


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
