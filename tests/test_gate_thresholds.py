"""Each gate threshold pinned from both sides: one text at the limit and one just inside it, written
out literally (not computed from the constant), so that moving a threshold either way fails a test.
`python bench/gate_mutations.py` moves each threshold and shows which test now fails."""
from embedfactory.config import GATE_NAMES
from embedfactory.filter import gates
from embedfactory.filter.gates import Asked

PROMPT = Asked("Write one search query that a reader of the passage would type into a library catalogue.", "", {})
BARE = Asked("", "", {})


def test_echo_needs_a_run_of_four_prompt_words_with_two_content_words():
    # ECHO_N 4: "reader of the passage" is a 4-word run of the prompt ("the" counts as a determiner)
    assert gates.echo("a good reader of the passage likes maps", PROMPT).startswith("repeats the prompt")
    assert gates.echo("a good search query that works", PROMPT) is None  # "search query that": 3 words only
    # ECHO_CONTENT 2: "would type into a" has one content word ("type"): no echo; "type into a library" two
    assert gates.echo("what would type into a box mean", PROMPT) is None
    assert gates.echo("I would type into a library catalogue", PROMPT) == 'repeats the prompt: "type into a library"'


def test_a_run_from_the_task_fails_at_four_words_making_half_the_text():
    asked = Asked("", "Given a scientific claim, retrieve documents that support or refute it", {})
    # TASK_SPAN 4 and TASK_SHARE 0.5: 4 task words in an 8-word text
    assert gates.echo("please retrieve documents that support my view today", asked).startswith("copies 4 of its 8")
    assert gates.echo("please retrieve documents that support my view today now", asked) is None  # 4 of 9
    assert gates.echo("retrieve documents that prove it", asked) is None  # a 3-word run, 3 of 5


def test_copy_fails_at_word_overlap_four_fifths():
    positive = "alpha beta gamma delta epsilon"
    # COPY_JACCARD 0.8: 4 of 5 content words (no run of two in order)
    assert gates.copy("epsilon gamma alpha delta", positive).startswith("is a near copy of the positive (word overlap 0.80)")
    assert gates.copy("delta beta alpha", "alpha beta gamma delta") is None  # 3 of 4: 0.75


POSITIVE = " ".join(f"w{i}" for i in range(1, 31))  # 30 distinct words: a copied run barely moves the overlap


def test_copy_fails_on_a_verbatim_run_of_nine_tenths_of_a_query_of_four_words_or_more():
    # COPY_SPAN_SHARE 0.9: a run of 9 in a 10-word query fails, 8 of 10 passes
    assert gates.copy("w1 w2 w3 w4 w5 w6 w7 w8 w9 x", POSITIVE).startswith("copies 9 of its 10 words")
    assert gates.copy("w1 w2 w3 w4 w5 w6 w7 w8 x y", POSITIVE) is None
    # COPY_SPAN_MIN 4: a 4-word query copied whole fails, a 3-word one passes
    assert gates.copy("w5 w6 w7 w8", POSITIVE).startswith("copies 4 of its 4 words")
    assert gates.copy("w5 w6 w7", POSITIVE) is None


def test_copy_fails_on_any_verbatim_run_of_twelve_words():
    # COPY_SPAN_WORDS 12: 12 copied words in a 20-word query fail, 11 pass
    tail = " a1 a2 a3 a4 a5 a6 a7 a8"
    assert gates.copy("w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12" + tail, POSITIVE).startswith("copies 12 of its 20")
    assert gates.copy("w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 b1" + tail, POSITIVE) is None


def test_a_query_asked_no_length_has_three_to_four_hundred_words():
    # QUERY_WORDS (3, 400)
    assert gates.query_length("bike tube repair") is None and gates.query_length("tube repair")
    assert gates.query_length("word " * 400) is None and gates.query_length("word " * 401)


def test_repeats_fail_at_four_words_three_phrases_three_sentences():
    assert gates.degenerate("go go go go home") == 'repeats "go" 4 times in a row'  # REPEAT_WORD 4
    assert gates.degenerate("go go go home") is None
    assert gates.degenerate("the best the best the best bike") == 'repeats "the best" 3 times in a row'
    assert gates.degenerate("the best the best bike") is None  # REPEAT_NGRAM 3
    rain = "It rains all day long."  # REPEAT_SENTENCE 3, not back to back
    assert gates.degenerate(f"{rain} I stay in. {rain} We read. {rain}").startswith("repeats a sentence 3 times")
    assert gates.degenerate(f"{rain} I stay in. {rain} We read.") is None


def test_a_label_has_at_most_six_words():
    asked = Asked("", "Classify product reviews by sentiment", {})
    six = "praise for the long battery life"
    assert gates.label({"label": six, "misleading_label": "negative"}, asked) is None  # LABEL_MAX_WORDS 6
    assert gates.label({"label": six + " overall", "misleading_label": "negative"}, asked) == \
        "label has 7 words (a class has at most 6)"


def test_sts_sentences_are_near_copies_at_word_similarity_four_fifths():
    s3 = "Stock markets fell sharply on Monday."
    # STS_NEAR 0.8: 5-word sentences sharing 4 words in order: 2 * 4 / 10 = 0.80
    assert gates.sts_pair({"S1": "A man plays the guitar.", "S2": "A man plays a guitar.", "S3": s3}) == \
        "S2 is a near copy of S1 (word similarity 0.80)"
    # 9-word sentences sharing 7: 14 / 18 = 0.78
    assert gates.sts_pair({"S1": "The old man slowly plays his guitar on stage.",
                           "S2": "The old man quickly plays a guitar on stage.", "S3": s3}) is None


def test_an_sts_sentence_without_a_full_stop_needs_three_words():
    s2, s3 = "A man plays a guitar on stage.", "Stock markets fell sharply on Monday."
    assert gates.sts_pair({"S1": "Small business", "S2": s2, "S3": s3}, "sentence").startswith("S1 is not a sentence")
    assert gates.sts_pair({"S1": "Small businesses grow", "S2": s2, "S3": s3}, "sentence") is None  # STS_SENTENCE_WORDS 3


def test_a_text_in_another_script_fails_below_half_its_letters():
    # SCRIPT_SHARE 0.5: 2 of 4 letters Chinese pass, 2 of 5 fail
    assert gates.language("狗狗ab", "Chinese") is None
    assert gates.language("狗狗abc", "Chinese") == "is not in Chinese: 40% of its letters in its script"


def test_a_latin_text_is_foreign_at_three_function_words_of_another_language():
    # FOREIGN_WORDS 3: Spanish-only function words (los, pero, está) in a text asked in English
    assert gates.language("los gatos pero está", "English") == \
        "is not in English: 3 Spanish function words against 0"
    assert gates.language("los gatos pero", "English") is None


def test_the_gates_run_in_an_order_that_holds_each_named_gate_once():
    assert sorted(gates.ORDER) == sorted(GATE_NAMES) and len(set(gates.ORDER)) == len(GATE_NAMES)
    assert set(gates.QUERY_GATES) < set(GATE_NAMES)
