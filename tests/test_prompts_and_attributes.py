import collections
import hashlib
import itertools
import random
from pathlib import Path

import jinja2
import pytest
from fake_llm import fake_value

from embedfactory import prompts
from embedfactory.config import Sampling, SynthConfig, SynthParams
from embedfactory.synth.brainstorm import assign_task_types
from embedfactory.synth.generate import draw_attributes
from embedfactory.synth.personas import normalized
from embedfactory.synth.sources import seed_personas
from embedfactory.task_types import ATTRIBUTES, BITEXT_LANGUAGES, QUERY_TYPE, TASK_SPECS, Draw, draw_attributes_for


@pytest.mark.parametrize("name", sorted(TASK_SPECS))
def test_generation_prompt_carries_task_and_every_attribute(name):
    task = {"task_id": "t1", "task_type": name, "task": "Classify bird calls by species"}
    attributes, order = draw_attributes(task, 0, seed=7, max_words=500)
    text = prompts.render(TASK_SPECS[name].generate_prompt, task=task["task"], order=order, **attributes)
    assert (task["task"] in text) == (TASK_SPECS[name].fixed_task is None)  # fixed tasks: no slot
    for value in attributes.values():
        assert str(value) in text
    spec = TASK_SPECS[name]

    def guideline_lines(drawn: list[int]) -> list[str]:  # the user block's bullets (the system block's not)
        user = prompts.messages(spec.generate_prompt, task=task["task"], order=drawn, **attributes)[-1]["content"]
        return [line for line in user.splitlines() if line.startswith("- ")]

    alone = [guideline_lines([i]) for i in range(spec.guidelines)]  # each guideline rendered by itself
    assert all(len(lines) <= 1 for lines in alone)
    assert sum(map(len, alone)) >= spec.guidelines - 1  # only the difficulty line may be empty (none drawn)
    assert sorted(order) == list(range(spec.guidelines))
    assert guideline_lines(order) == [alone[i][0] for i in order if alone[i]]  # each once, in the drawn order


def test_missing_slot_fails_loudly():
    with pytest.raises(jinja2.UndefinedError):
        prompts.render("persona_expand", count=3)


def test_prompt_version_is_a_hash_of_the_file_and_follows_an_edit(monkeypatch):
    path = Path(prompts.__file__).with_name("revise.j2")
    before = prompts.version("revise")
    assert before == hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    monkeypatch.setattr(prompts, "source", lambda name: path.read_text() + "\nOne more rule.")
    assert prompts.version("revise") != before


COLUMNS = {"retrieval": ("user_query", "positive_document", "hard_negative_document"),
           "classification": ("input_text", "label", "misleading_label"),
           "short-short": ("input", "positive_document", None), "long-long": ("input", "positive_document", None),
           "sts": ("S1", "S2", "S3"), "bitext": ("S1", "S2", "S3")}


@pytest.mark.parametrize("task_type", sorted(TASK_SPECS))
def test_each_task_type_maps_its_fields_to_anchor_positive_negative(task_type):
    spec = TASK_SPECS[task_type]
    output = spec.output.model_validate(fake_value(spec.output.model_json_schema(), itertools.count()))
    fields = output.model_dump()
    assert spec.columns(output) == tuple(fields[f] if f else None for f in COLUMNS[task_type])


def test_attributes_are_reproducible_per_lineage_and_vary_across_it():
    task = {"task_id": "t1", "task_type": "retrieval"}
    assert draw_attributes(task, 0, 1, 500) == draw_attributes(task, 0, 1, 500)
    draws = {str(draw_attributes(task, i, 1, 500)) for i in range(20)}
    assert len(draws) > 10


def test_query_type_follows_the_reference_weights():
    task = {"task_type": "retrieval"}
    counts = collections.Counter(
        draw_attributes({**task, "task_id": f"t{i}"}, 0, 0, 500)[0]["query_type"] for i in range(3000))
    for value, weight in QUERY_TYPE:
        assert abs(counts[value] / 3000 - weight) < 0.04, (value, counts)


def test_length_asks_respect_the_cap():
    capped = Draw(random.Random(0), 100, ["English"])
    assert {draw_attributes_for("retrieval", capped)["num_words"] for _ in range(60)} == {50, 100}
    assert {draw_attributes_for("long-long", capped)["num_words"] for _ in range(5)} == {100}  # the cap itself
    assert ({draw_attributes_for("classification", capped)["num_words"] for _ in range(200)}
            == {"less than 10", "at least 10", "at least 50", "at least 100"})
    free = Draw(random.Random(0), None, ["English"])
    assert {draw_attributes_for("retrieval", free)["num_words"] for _ in range(200)} == {50, 100, 200, 300, 400, 500}
    assert {draw_attributes_for("long-long", free)["num_words"] for _ in range(5)} == {300}


# The reference value sets (E5-mistral's prompt tables; SPEED's weights where its code gives them).
RECIPE = {
    "retrieval": {"query_type": {"extremely long-tail": .4, "long-tail": .5, "common": .1},
                  "query_length": {"less than 5 words": .4, "5 to 15 words": .4, "at least 10 words": .2},
                  "clarity": {"clear": .6, "understandable with some effort": .2, "ambiguous": .2},
                  "num_words": {n: 1 / 6 for n in (50, 100, 200, 300, 400, 500)},
                  "difficulty": {"high school": 1 / 3, "college": 1 / 3, "PhD": 1 / 3}},
    "classification": {"num_words": {"less than 10": .1, "at least 10": .3, "at least 50": .2,
                                     "at least 100": .2, "at least 200": .2},
                       "clarity": {"clear": .6, "understandable with some effort": .2, "ambiguous": .2},
                       "difficulty": {"high school": 1 / 3, "college": 1 / 3, "PhD": 1 / 3}},
    "long-long": {"num_words": {300: 1}},
    "sts": {"unit": {"sentence": .9, "phrase": .05, "passage": .05}, "high_score": {4: 1 / 3, 4.5: 1 / 3, 5: 1 / 3},
            "low_score": {2.5: 1 / 3, 3: 1 / 3, 3.5: 1 / 3},
            "difficulty": {"elementary school": 1 / 3, "high school": 1 / 3, "college": 1 / 3}},
    "bitext": {"unit": {"sentence": 1 / 3, "phrase": 1 / 3, "passage": 1 / 3},
               "high_score": {4: 1 / 3, 4.5: 1 / 3, 5: 1 / 3}, "low_score": {1.5: 1 / 3, 2: 1 / 3, 2.5: 1 / 3},
               "difficulty": {"elementary school": 1 / 3, "high school": 1 / 3, "college": 1 / 3}},
}
OPTIONAL = {"retrieval": {"difficulty"}, "classification": {"clarity", "difficulty"}, "sts": {"difficulty"}}


@pytest.mark.parametrize("task_type", sorted(RECIPE))
def test_attribute_draws_follow_the_recipe(task_type):
    n = 4000
    draws = [draw_attributes({"task_id": f"t{i}", "task_type": task_type}, 0, 0, None)[0] for i in range(n)]
    for name, weights in RECIPE[task_type].items():
        present = [d[name] for d in draws if name in d]
        share = len(present) / n
        assert abs(share - (.5 if name in OPTIONAL.get(task_type, ()) else 1)) < .03, (name, share)
        counts = collections.Counter(present)
        assert set(counts) == set(weights), (name, counts)
        for value, weight in weights.items():
            assert abs(counts[value] / len(present) - weight) < .03, (name, value, counts)
    for group in [OPTIONAL.get(task_type, set())]:  # an optional group is asked together or not at all
        assert all(len(group & set(d)) in (0, len(group)) for d in draws)
    assert set(ATTRIBUTES["short-short"]) == {"language"}  # E5: short-short asks only the language


def test_bitext_draws_from_about_ninety_languages():
    assert len(BITEXT_LANGUAGES) >= 90 and len(set(BITEXT_LANGUAGES)) == len(BITEXT_LANGUAGES)
    # XLM-R's low-resource languages are there, not only the ten largest
    assert {"Swahili", "Urdu", "Uzbek", "Welsh", "Amharic", "Sinhala", "Xhosa"} <= set(BITEXT_LANGUAGES)
    pairs = {tuple(draw_attributes({"task_id": f"t{i}", "task_type": "bitext"}, 0, 0, None)[0][k]
                   for k in ("source_language", "target_language")) for i in range(3000)}
    assert len({lang for pair in pairs for lang in pair}) >= 85


def _user(task_type: str, **attributes) -> str:
    order = list(range(TASK_SPECS[task_type].guidelines))
    return prompts.messages(TASK_SPECS[task_type].generate_prompt, task="Given a tide table, find the port",
                            order=order, topic="Science/Earth_Sciences/Oceanography", **attributes)[1]["content"]


def test_generation_prompts_ask_the_recipe_lengths():
    retrieval = _user("retrieval", query_type="common", query_length="less than 5 words", clarity="clear",
                      num_words=300, language="English")
    assert "at least 300 words" in retrieval and "about" not in retrieval
    assert "less than 5 words" in retrieval and "level education" not in retrieval  # no difficulty drawn
    assert "at least 300 words" in _user("long-long", num_words=300, language="English")
    assert "at least 50 words long" in _user("classification", num_words="at least 50", language="German")
    assert "less than 10 words long" in _user("classification", num_words="less than 10", language="German")
    assert "very short: a sentence or a phrase" in _user("short-short", language="English")
    sts = _user("sts", unit="sentence", high_score=4.5, low_score=3, language="English")
    assert "Science > Earth Sciences > Oceanography" in sts  # STS and bitext get a topic
    bitext = _user("bitext", unit="phrase", high_score=5, low_score=1.5, difficulty="college",
                   source_language="Welsh", target_language="Korean")
    assert "Oceanography" in bitext and "Welsh" in bitext and "1.5" in bitext


def test_bitext_pairs_two_different_languages():
    for i in range(30):
        attributes, _ = draw_attributes({"task_id": f"t{i}", "task_type": "bitext"}, 0, 0, 500)
        assert attributes["source_language"] != attributes["target_language"]


@pytest.mark.parametrize("personas,per_persona", [(4, 1), (7, 3), (1, 23)])
def test_task_mix_is_apportioned_exactly(personas, per_persona):
    mix = {"classification": 7, "sts": 7, "retrieval": 7, "short-short": 1, "long-long": 1}
    types = assign_task_types(personas, per_persona, mix, seed=0)
    assert [len(t) for t in types] == [per_persona] * personas
    counts = collections.Counter(t for ts in types for t in ts)
    total = personas * per_persona
    for name, weight in mix.items():
        assert abs(counts[name] - total * weight / 23) < 1
    assert types == assign_task_types(personas, per_persona, mix, seed=0)


def test_seed_personas_ship_and_normalise():
    assert len(seed_personas()) >= 5
    assert normalized("A  Nurse, who codes!") == normalized("a nurse who codes")


@pytest.mark.parametrize("name", sorted(TASK_SPECS))
def test_generation_prompts_put_the_fixed_part_first_for_prefix_caching(name):
    """The system message is the same for every task and attribute draw of a type (a server caches
    it once); everything that varies is in the user message that follows."""
    systems, users = set(), []
    for i, task_text in enumerate(["Classify bird calls by species", "Given a symptom, find its causes"]):
        task = {"task_id": f"t{i}", "task_type": name, "task": task_text}
        attributes, order = draw_attributes(task, i, seed=i, max_words=500)
        system, user = prompts.messages(TASK_SPECS[name].generate_prompt, task=task_text, order=order,
                                        **attributes)
        assert (system["role"], user["role"]) == ("system", "user")
        systems.add(system["content"])
        users.append(user["content"])
        assert all(str(v) in user["content"] for v in attributes.values())
        assert (task_text in user["content"]) == (TASK_SPECS[name].fixed_task is None)
    assert len(systems) == 1 and len(next(iter(systems))) > 200 and users[0] != users[1]


def test_revise_and_persona_prompts_vary_only_in_their_last_message():
    a = prompts.messages("revise", task_type="sts", task="t1", example='{"S1": "a"}')
    b = prompts.messages("revise", task_type="retrieval", task="t2", example='{"user_query": "q"}')
    assert a[0] == b[0] and a[1] != b[1] and '{"S1": "a"}' in a[1]["content"]
    c = prompts.messages("persona_expand", seed_persona="A baker", count=2)
    d = prompts.messages("persona_expand", seed_persona="A pilot", count=3)
    assert c[0] == d[0] and "A baker" in c[1]["content"] and "3" in d[1]["content"]
    assert prompts.messages("topic", topic="x") == [{"role": "user", "content": prompts.render("topic", topic="x")}]


def test_the_cpu_default_caps_length_asks_and_the_deployments_ask_the_recipe():
    """The flow's defaults are sized for the embedded CPU run: asks capped at 30 words (what the 1.5B
    writes; bench/generation_throughput.py); the GPU deployments ask the recipe's lengths, with
    SPEED's revisor and task mix."""
    import yaml

    from embedfactory.config import CPU_MAX_WORDS, SPEED_TASK_MIX
    assert SynthConfig().max_num_words == CPU_MAX_WORDS == 30 and Sampling().resolved().max_tokens == 2048
    assert Sampling(max_tokens=99).resolved().max_tokens == 99
    from embedfactory.synth.pipeline import EXAMPLES
    assert EXAMPLES.config(SynthParams())["max_num_words"] == 30  # it shapes the data: in the cache key
    deployments = yaml.safe_load((Path(prompts.__file__).parents[2] / "deployments" / "prefect.yaml").read_text())
    synth_runs = [d for d in deployments["deployments"] if d["entrypoint"] == "flows/synth.py:synth"]
    assert len(synth_runs) == 2
    for deployment in synth_runs:
        params = SynthParams.model_validate({**deployment["parameters"]["params"], "store": "x"})
        assert params.synth.max_num_words is None and params.synth.revise and params.synth.task_mix == SPEED_TASK_MIX
    draws = [draw_attributes({"task_id": f"t{i}", "task_type": "retrieval"}, 0, 0, 30)[0] for i in range(50)]
    assert {d["num_words"] for d in draws} == {30}  # no recipe value is under the cap: the cap itself
    draws = [draw_attributes({"task_id": f"t{i}", "task_type": "classification"}, 0, 0, 30)[0] for i in range(200)]
    assert {d["num_words"] for d in draws} == {"less than 10", "at least 10"}
