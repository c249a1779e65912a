"""Quality gates: cheap checks that catch what a small generator gets wrong and still passes the schema.

A gate returns None when a text passes and a short detail when it fails. The gates only read what
they are given (the fields, what the model was asked, embeddings made elsewhere): they call no model.

Each gate fails a text when (thresholds in the constants below):
- echo: it repeats the fixed prompt (an ECHO_N-word run after light normalization), talks about
  "this task", is a field name or an attribute value, or is mostly a run of the task sentence;
- copy: a query (a hard negative, a matching input) nearly equals its positive or title, or copies
  a long run of it;
- length: its word count is outside the asked range, LENGTH_TOLERANCE either way (and LENGTH_SLACK
  words more above: the 0.5B model's 8-word queries for "less than 5 words" are good queries); a
  grounded query, asked no length, outside QUERY_WORDS (real question collections' range);
- degenerate: empty, placeholder or filler text, a word or phrase repeated back to back, a looped sentence;
- language: it is not in the asked script/language, or a translation equals its source;
- label: a classification label is empty, long, generic, the task's own dimension ("book
  classification"), or the misleading label again;
- sts: STS sentences are near copies of each other (`sts_order`: S3 must be farther from S1 than S2).
"""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from functools import lru_cache

import numpy as np

from ..config import GATE_NAMES
from ..schemas import Reason

ORDER = ("degenerate", "echo", "copy", "label", "sts", "language", "length")  # how `check` runs the GATE_NAMES
QUERY_GATES = ("degenerate", "echo", "copy", "length")  # the gates `check_query` runs

ECHO_N = 4  # words in a run shared with the fixed prompt (after normalization) ...
ECHO_CONTENT = 2  # ... of which at least this many are not stopwords
TASK_SPAN = 4  # a run shared with the task sentence fails if it has this many words ...
TASK_SHARE = 0.5  # ... and makes up at least this share of the text
COPY_JACCARD = 0.8  # content-word-set overlap |A & B| / |A | B| with the positive or the title
COPY_SPAN_SHARE = 0.9  # one verbatim run covering this share of the query ...
COPY_SPAN_MIN = 4  # ... for queries of at least this many words
COPY_SPAN_WORDS = 12  # any verbatim run this long fails whatever the query's length
LENGTH_TOLERANCE = 0.5  # word counts from lo * (1 - t) to hi * (1 + t) + LENGTH_SLACK pass
LENGTH_SLACK = 3  # words more than that: a short query asked "less than 5 words" may have 9
# a grounded query is asked no word count: real questions run from 4 words (CISI) to 46 (Cranfield)
# and 345 (CISI's information needs), so only a stub ("tube") or runaway text fails
# (synth/calibration.py: every gate rejects under 1% of Cranfield's and CISI's real queries)
QUERY_WORDS = (3, 400)
REPEAT_WORD = 4  # one word back to back this many times
REPEAT_NGRAM = 3  # a 2- to 6-word phrase back to back this many times
REPEAT_SENTENCE = 3  # one sentence (of 4+ words) this many times
LABEL_MAX_WORDS = 6
STS_NEAR = 0.8  # word-sequence similarity (difflib ratio) at which two STS sentences are near copies
STS_SENTENCE_WORDS = 3  # an STS "sentence" of fewer words needs its full stop ("It rains."); one word never
# scripts written without spaces between words (Thai, Lao, Myanmar, Khmer, kana, CJK), and Korean,
# whose sentences may be two words: there a word count says nothing about a sentence
UNSPACED = re.compile(r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")

NOT_INSTRUCTIONS = ("title",)  # attributes that carry data, not wording the model could echo
FIELD_NAMES = ("user_query", "positive_document", "hard_negative_document", "input_text", "label",
               "misleading_label", "input", "S1", "S2", "S3")
GENERIC_LABELS = frozenset({
    "not suitable", "unsuitable", "suitable", "not applicable", "n a", "na", "none", "null", "unknown",
    "other", "others", "misc", "miscellaneous", "general", "undefined", "unclassified", "uncategorized",
    "no label", "label", "class", "category", "correct", "incorrect", "correct label", "wrong label",
    "not relevant", "irrelevant", "not sure", "unclear", "various"})
EMPTY_TEXTS = frozenset({"n a", "na", "none", "null", "nil", "tbd", "todo", "placeholder", "text",
                         "string", "example", "etc", "query", "document", "passage", "answer"})
META = re.compile(  # the text talks about the request instead of doing it
    r"\b(?:this|the given|the above) (?:task|prompt|instructions?|passage)\b"
    # describing the data instead of writing it (0.5B STS: "a description of the same scenario")
    r"|\bdescription of (?:a|the same) (?:scenario|event|situation)\b", re.IGNORECASE)
# an STS or bitext text commenting on itself (0.5B: "This sentence accurately describes", "In this
# sentence, we see"); only there: a document about grammar may say "in this sentence" and be fine
SELF_COMMENT = re.compile(r"\bthis sentence (?:\w+ly )?(?:describes|is about|talks about|refers to|shows|means)\b"
                          r"|\bin this sentence\b", re.IGNORECASE)
DIMENSION_WORDS = ("classification", "category", "categorization", "label")  # "book classification"
PLACEHOLDER = re.compile(  # template slots and stock filler ("quick brown fox": 0.5B's favourite S1)
    r"lorem ipsum|quick brown fox|\[\s*(?:insert|your|add|enter|put|placeholder|name of)\b"
    r"|\[(?:query|document|passage|answer|text)\]|<\s*/?\s*(?:query|document|passage|answer|sentence)\s*>"
    r"|\{\{\s*\w+\s*\}\}", re.IGNORECASE)

STOPWORDS = frozenset("""a an the this that these those and or but nor not no of to in on at for with by
from as into onto about over under up down out off than then so if when where why how what which who whom
whose is are was were be been being am do does did have has had having can could will would shall should
may might must it its they them their theirs he him his she her hers we us our ours you your yours i me my
mine there here also just only very more most some any each every all both one such own same other s""".split())
DETERMINERS = frozenset("a an the this that these those your my his her their its our".split())

# distinctive function words per Latin-script language: a text scoring far higher for another
# language than for its own is in the wrong language
FUNCTION_WORDS = {lang: frozenset(text.split()) for lang, text in {
    "English": "the and is are was were of with that this for it not to you have has be from by which what",
    "Spanish": "el los las y es del que una con por para pero como más está son se lo al su",
    "French": "le les et est des du une dans pour avec pas ne sur qui au ce sont il elle nous vous",
    "German": "der die das und ist nicht ein eine mit zu den auf für von dem sich auch es im sind",
    "Portuguese": "o os e é um uma em com não para do da dos das que no na se por mais são",
    "Italian": "il lo gli e è di che un una per con non del della sono nel anche",
}.items()}
SCRIPTS = {  # non-Latin languages: the Unicode script names (unicodedata.name prefixes) of their letters
    "Chinese": ("CJK",), "Japanese": ("CJK", "HIRAGANA", "KATAKANA"), "Korean": ("HANGUL",),
    "Russian": ("CYRILLIC",), "Ukrainian": ("CYRILLIC",), "Bulgarian": ("CYRILLIC",), "Arabic": ("ARABIC",),
    "Persian": ("ARABIC",), "Hindi": ("DEVANAGARI",), "Greek": ("GREEK",), "Hebrew": ("HEBREW",),
    "Thai": ("THAI",),
}
SCRIPT_SHARE = 0.5  # at least this share of a text's letters in the language's script
FOREIGN_WORDS = 3  # another language's function words needed to call a Latin-script text foreign
SPACELESS = ("Chinese", "Japanese", "Thai")  # no whitespace words: no length gate


@dataclass(frozen=True)
class Asked:
    """What the model was asked: the fixed instruction text, the task sentence, the attributes."""

    prompt: str
    task: str
    attributes: dict = field(default_factory=dict)


# ---- text helpers ---------------------------------------------------------------------------
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits; apostrophes inside a word kept)."""
    return _WORD.findall(text.casefold())


def _normal(text: str) -> str:
    return " ".join(words(text))


def _echo_form(token: str) -> str:
    """Light normalization for echo matching: determiners alike, possessive and plural -s dropped."""
    if token in DETERMINERS:
        return "_"
    token = re.sub(r"['’]s$", "", token)
    return token[:-1] if len(token) > 3 and token.endswith("s") and not token.endswith("ss") else token


def _content(tokens) -> int:
    return sum(t != "_" and t not in STOPWORDS for t in tokens)


@lru_cache(maxsize=64)
def _prompt_grams(prompt: str) -> frozenset:
    tokens = [_echo_form(t) for t in words(prompt)]
    return frozenset(tuple(tokens[i:i + ECHO_N]) for i in range(len(tokens) - ECHO_N + 1))


def _longest_run(a: list[str], b: list[str]) -> tuple[int, int]:
    """Length and start in `a` of the longest run of words that `a` and `b` share."""
    if not a or not b:
        return 0, 0
    match = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
    return match.size, match.a


def _jaccard(a: list[str], b: list[str]) -> float:
    """Overlap of the content-word sets (all words where a side has no content word)."""
    sa, sb = set(a) - STOPWORDS or set(a), set(b) - STOPWORDS or set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def _quote(tokens: list[str], limit: int = 12) -> str:
    return '"' + " ".join(tokens[:limit]) + (" …" if len(tokens) > limit else "") + '"'


@lru_cache(maxsize=1)
def _repair_grams() -> frozenset:
    from ..llm.client import repair_message

    return _prompt_grams(repair_message(""))


# ---- single gates ---------------------------------------------------------------------------
def echo(text: str, asked: Asked) -> str | None:
    """The text repeats the instructions instead of doing them."""
    raw = words(text)
    key = " ".join(raw)
    for name in FIELD_NAMES:
        if key == _normal(name.replace("_", " ")) or ("_" in name and name in text.casefold()):
            return f"names the field {name!r}"
    task_key = _normal(asked.task)
    for name, value in asked.attributes.items():
        value_key = _normal(value) if isinstance(value, str) and name not in NOT_INSTRUCTIONS else ""
        if not value_key or f" {value_key} " in f" {task_key} ":
            continue
        # a length ask ("less than 10", "at least 50 words") may occur in real text: only the text
        # that is nothing but the ask is an echo
        inside = len(value_key.split()) >= 3 and asked_range(value) is None and f" {value_key} " in f" {key} "
        if key == value_key or inside:
            return f"repeats the attribute value {value!r}"
    forms = [_echo_form(t) for t in raw]
    grams = _prompt_grams(asked.prompt) | _repair_grams()  # the client's repair turn is asked too
    for i in range(len(forms) - ECHO_N + 1):
        gram = tuple(forms[i:i + ECHO_N])
        if gram in grams and _content(gram) >= ECHO_CONTENT:
            return f"repeats the prompt: {_quote(raw[i:i + ECHO_N])}"
    if m := META.search(text):
        return f"talks about the request: {m[0]!r}"
    size, start = _longest_run(forms, [_echo_form(t) for t in words(asked.task)])
    if size >= TASK_SPAN and size >= TASK_SHARE * len(forms):
        return f"copies {size} of its {len(forms)} words from the task: {_quote(raw[start:start + size])}"
    return None


def copy(query: str, source: str, title: str | None = None) -> str | None:
    """The query is (nearly) its positive or the positive's title, or copies a long run of it."""
    q = words(query)
    if not q:
        return None
    for name, other in (("title", title), ("positive", source)):
        o = words(other or "")
        if not o:
            continue
        if q == o:
            return f"equals the {name}"
        overlap = _jaccard(q, o)
        if overlap >= COPY_JACCARD:
            return f"is a near copy of the {name} (word overlap {overlap:.2f})"
        size, start = _longest_run(q, o)
        if size >= COPY_SPAN_WORDS or (len(q) >= COPY_SPAN_MIN and size >= COPY_SPAN_SHARE * len(q)):
            return f"copies {size} of its {len(q)} words from the {name}: {_quote(q[start:start + size])}"
    return None


def asked_range(value) -> tuple[float, float] | None:
    """The word range a length attribute asks for: "5 to 15 words" -> (5, 15); a number N is asked as
    "at least N words" (E5's documents): 50 -> (50, inf)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), math.inf
    text = str(value or "").casefold()
    if m := re.search(r"(\d+)\s*(?:to|-)\s*(\d+)", text):
        return float(m[1]), float(m[2])
    if m := re.search(r"less than (\d+)", text):
        return 1.0, float(m[1]) - 1
    if m := re.search(r"at most (\d+)", text):
        return 1.0, float(m[1])
    if m := re.search(r"(?:at least|more than) (\d+)", text):
        return float(m[1]), math.inf
    return None


def length(text: str, attributes: dict, key: str = "num_words") -> str | None:
    """The word count is outside the range `attributes[key]` asked for, LENGTH_TOLERANCE either way
    and LENGTH_SLACK words more above."""
    bounds = asked_range(attributes.get(key))
    if bounds is None or attributes.get("language") in SPACELESS:
        return None
    lo, hi = bounds[0] * (1 - LENGTH_TOLERANCE), bounds[1] * (1 + LENGTH_TOLERANCE) + LENGTH_SLACK
    n = len(text.split())
    if lo <= n <= hi:
        return None
    return f"has {n} words, asked {attributes[key]!r} ({math.ceil(lo)} to {hi:g} pass)"


def query_length(text: str) -> str | None:
    """A query asked no length (grounded) has fewer or more words than QUERY_WORDS allows."""
    n, (lo, hi) = len(text.split()), QUERY_WORDS
    return None if lo <= n <= hi else f"has {n} words ({lo} to {hi} pass; no length asked)"


def degenerate(text: str) -> str | None:
    """Empty, placeholder, or looping text."""
    raw = words(text)
    if not raw:
        return "has no words"
    if " ".join(raw) in EMPTY_TEXTS:
        return f"is a placeholder: {_quote(raw)}"
    if m := PLACEHOLDER.search(text):
        return f"has placeholder text: {m[0]!r}"
    for n in range(1, 7):
        needed = REPEAT_WORD if n == 1 else REPEAT_NGRAM
        for i in range(len(raw) - n * needed + 1):
            gram = raw[i:i + n]
            if all(raw[i + k * n:i + (k + 1) * n] == gram for k in range(1, needed)):
                return f"repeats {_quote(gram)} {needed} times in a row"
    sentences = [_normal(s) for s in re.split(r"(?<=[.!?。！？])\s*|\n+", text)]
    sentences = [s for s in sentences if len(s.split()) >= 4]
    for s in set(sentences):
        if sentences.count(s) >= REPEAT_SENTENCE:
            return f"repeats a sentence {sentences.count(s)} times: {_quote(s.split())}"
    return None


def _script_share(text: str, scripts: tuple[str, ...]) -> tuple[float, int]:
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 1.0, 0
    hits = sum(unicodedata.name(c, "").startswith(scripts) for c in letters)
    return hits / len(letters), len(letters)


def language(text: str, language: str, source: str | None = None) -> str | None:
    """The text is not in `language` (script share; function words of another Latin-script
    language), or equals `source`, the side it should translate."""
    if source is not None and _normal(text) == _normal(source):
        return "equals its source side (not translated)"
    if language in SCRIPTS:
        share, letters = _script_share(text, SCRIPTS[language])
        if letters >= 3 and share < SCRIPT_SHARE:
            return f"is not in {language}: {share:.0%} of its letters in its script"
        return None
    if language not in FUNCTION_WORDS:
        return None
    share, letters = _script_share(text, ("LATIN",))
    if letters >= 3 and share < SCRIPT_SHARE:
        return f"is not in {language}: {share:.0%} of its letters are Latin"
    tokens = words(text)
    own = sum(t in FUNCTION_WORDS[language] for t in tokens)
    other, best = max((sum(t in fw for t in tokens), lang) for lang, fw in FUNCTION_WORDS.items()
                      if lang != language)
    if other >= FOREIGN_WORDS and other > 2 * own:
        return f"is not in {language}: {other} {best} function words against {own}"
    return None


def _in_task(word: str, task_words: list[str]) -> bool:
    """The task has the word (4-letter prefixes alike: "suitable" ~ "suitability")."""
    return any(word[:4] == t[:4] if min(len(word), len(t)) >= 4 else word == t for t in task_words)


def label(fields: dict, asked: Asked) -> str | None:
    """A classification label that is no usable class: empty, long, generic, or the misleading one."""
    task_words = words(asked.task)
    for name in ("label", "misleading_label"):
        tokens = words(fields.get(name) or "")
        if not tokens:
            return f"{name} is empty"
        if len(tokens) > LABEL_MAX_WORDS:
            return f"{name} has {len(tokens)} words (a class has at most {LABEL_MAX_WORDS})"
        key = " ".join(tokens)
        named = any(_in_task(w, task_words) for w in tokens if w not in ("not", "no"))
        if key in GENERIC_LABELS and not named:
            return f"{name} is a generic non-label: {_quote(tokens)}"
        if tokens[-1] in DIMENSION_WORDS and all(_in_task(w, task_words) for w in tokens[:-1]):
            return f"{name} names the task, not a class: {_quote(tokens)}"
    bare = [[t for t in words(fields[n]) if t not in DETERMINERS] for n in ("label", "misleading_label")]
    if bare[0] == bare[1]:
        return "label equals misleading_label"
    return None


def self_comment(text: str) -> str | None:
    if m := SELF_COMMENT.search(text):
        return f"talks about itself: {m[0]!r}"
    return None


def sts_pair(fields: dict, unit: str | None = None) -> str | None:
    """STS texts asked to be sentences that are a word or two ("Business" / "Small Business"), or
    that are near copies of each other: word-sequence similarity of STS_NEAR."""
    texts = {n: words(fields.get(n) or "") for n in ("S1", "S2", "S3")}
    for name, tokens in texts.items():
        text = (fields.get(name) or "").strip()
        short = len(tokens) < 2 or (len(tokens) < STS_SENTENCE_WORDS and not text.endswith((".", "!", "?")))
        if unit == "sentence" and short and not UNSPACED.search(text):  # "It rains." passes, "Small Business" not
            return f"{name} is not a sentence ({len(tokens)} words; asked for a sentence)"
    for a, b in (("S1", "S2"), ("S1", "S3"), ("S2", "S3")):
        ratio = SequenceMatcher(None, texts[a], texts[b], autojunk=False).ratio()
        if ratio >= STS_NEAR:
            return f"{b} is a near copy of {a} (word similarity {ratio:.2f})"
    return None


def sts_order(s1: np.ndarray, s2: np.ndarray, s3: np.ndarray) -> list[Reason | None]:
    """Per row of three L2-normalised (n, d) arrays: S3 must be less similar to S1 than S2 is."""
    close, far = np.sum(s1 * s2, axis=1), np.sum(s1 * s3, axis=1)
    return [None if f < c else Reason("gate", "sts", "S3 is not less similar to S1 than S2 is")
            for c, f in zip(close, far)]


# ---- per task type --------------------------------------------------------------------------
TEXT_FIELDS = {
    "retrieval": ("user_query", "positive_document", "hard_negative_document"),
    "classification": ("input_text", "label", "misleading_label"),
    "short-short": ("input", "positive_document"),
    "long-long": ("input", "positive_document"),
    "sts": ("S1", "S2", "S3"),
    "bitext": ("S1", "S2", "S3"),
}


def _field_gate(name: str, task_type: str, f: dict, asked: Asked):
    """(field, detail) pairs of one gate for one example, lazily, in field order."""
    attrs = asked.attributes
    texts = [(n, f[n]) for n in TEXT_FIELDS[task_type] if isinstance(f.get(n), str)]
    if name == "degenerate":
        yield from ((n, degenerate(t)) for n, t in texts)
    elif name == "echo":
        pairs = task_type in ("sts", "bitext")
        yield from ((n, echo(t, asked) or (self_comment(t) if pairs else None)) for n, t in texts)
    elif name == "copy" and task_type == "retrieval":
        yield "user_query", copy(f["user_query"], f["positive_document"])
        yield "hard_negative_document", copy(f["hard_negative_document"], f["positive_document"])
    elif name == "copy" and task_type in ("short-short", "long-long"):
        yield "input", copy(f["input"], f["positive_document"])
    elif name == "label" and task_type == "classification":
        yield None, label(f, asked)
    elif name == "sts" and task_type == "sts":
        yield None, sts_pair(f, attrs.get("unit"))
    elif name == "language" and task_type == "bitext":
        yield "S1", language(f["S1"], attrs.get("source_language", ""))
        for n in ("S2", "S3"):
            yield n, language(f[n], attrs.get("target_language", ""), source=f["S1"])
    elif name == "language" and "language" in attrs:
        yield from ((n, language(t, attrs["language"])) for n, t in texts if not n.endswith("label"))
    elif name == "length" and task_type == "retrieval":
        yield "user_query", length(f["user_query"], attrs, "query_length")
        yield from ((n, length(f[n], attrs)) for n in ("positive_document", "hard_negative_document"))
    elif name == "length" and task_type in ("classification", "long-long"):
        yield from ((n, length(t, attrs)) for n, t in texts if not n.endswith("label"))


def _first(pairs) -> str | None:
    for field_name, detail in pairs:
        if detail:
            return f"{field_name} {detail}" if field_name else detail
    return None


def check(task_type: str, fields: dict, asked: Asked, names=GATE_NAMES) -> Reason | None:
    """The first failing gate of an example (a Reason reading "gate <name>: <detail>"), else None.

    Gates run in ORDER; only those in `names` run; each runs on the fields its task type has. Fields
    that are not the type's (a row made elsewhere, without them) are not judged."""
    if task_type not in TEXT_FIELDS or not all(isinstance(fields.get(n), str) for n in TEXT_FIELDS[task_type]):
        return None
    for name in ORDER:
        if name in names and (detail := _first(_field_gate(name, task_type, fields, asked))):
            return Reason("gate", name, detail)
    return None


def check_query(query: str, passage: str, title: str | None, asked: Asked,
                names=GATE_NAMES) -> Reason | None:
    """The gates for a query written for a real passage (grounded synthesis). Its length: the asked
    `query_length` where the row has one (drawn with the E5 length mix), else QUERY_WORDS."""
    asked_length = "query_length" in asked.attributes
    gates = {"degenerate": lambda: degenerate(query), "echo": lambda: echo(query, asked),
             "copy": lambda: copy(query, passage, title),
             "length": lambda: (length(query, asked.attributes, "query_length") if asked_length
                                else query_length(query))}
    for name in (n for n in ORDER if n in QUERY_GATES):
        if name in names and (detail := gates[name]()):
            return Reason("gate", name, f"query {detail}")
    return None


def persona(text: str, asked: Asked) -> Reason | None:
    """A persona that restates the persona prompt or is degenerate. `asked.task` is the seed
    persona it was made from: a persona mostly copied from its seed fails echo too."""
    for name, gate in (("degenerate", degenerate), ("echo", lambda t: echo(t, asked))):
        if detail := gate(text):
            return Reason("gate", name, f"persona {detail}")
    return None
