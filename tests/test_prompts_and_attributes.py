import collections
import hashlib
import itertools
import random
from pathlib import Path

import jinja2
import pytest

from embedfactory import prompts
from embedfactory.stages.generate import draw_attributes
from embedfactory.sources import seed_personas
from embedfactory.stages.personas import normalized
from embedfactory.stages.brainstorm import assign_task_types
from embedfactory.task_types import QUERY_TYPE, TASK_SPECS, Draw
from fake_llm import fake_value


@pytest.mark.parametrize("name", sorted(TASK_SPECS))
def test_generation_prompt_carries_task_and_every_attribute(name):
    task = {"task_id": "t1", "task_type": name, "task": "Classify bird calls by species"}
    attributes, order = draw_attributes(task, 0, seed=7, max_words=500)
    text = prompts.render(TASK_SPECS[name].generate_prompt, task=task["task"], order=order, **attributes)
    assert (task["task"] in text) == (TASK_SPECS[name].fixed_task is None)  # fixed tasks: no slot
    for value in attributes.values():
        assert str(value) in text
    assert text.count("\n- ") >= TASK_SPECS[name].guidelines  # every guideline line rendered once


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


def test_num_words_respects_the_cap():
    draw = Draw(random.Random(0), 100, ["English"])
    assert {TASK_SPECS["retrieval"].attributes(draw)["num_words"] for _ in range(50)} == {50, 100}


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
