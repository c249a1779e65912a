import collections
import random

import jinja2
import pytest

from embedfactory import prompts
from embedfactory.stages.generate import draw_attributes
from embedfactory.stages.personas import normalized, seed_personas
from embedfactory.task_types import QUERY_TYPE, TASK_SPECS


@pytest.mark.parametrize("name", sorted(TASK_SPECS))
def test_generation_prompt_carries_task_and_every_attribute(name):
    task = {"task_id": "t1", "task_type": name, "task": "Classify bird calls by species"}
    attributes, order = draw_attributes(task, 0, seed=7, max_words=500)
    text = prompts.render(TASK_SPECS[name].generate_prompt, task=task["task"], order=order, **attributes)
    assert task["task"] in text
    for value in attributes.values():
        assert str(value) in text
    assert text.count("\n- ") >= TASK_SPECS[name].guidelines  # every guideline line rendered once


def test_missing_slot_fails_loudly():
    with pytest.raises(jinja2.UndefinedError):
        prompts.render("persona_expand", count=3)


def test_prompt_version_is_a_hash_of_the_file():
    assert prompts.version("revise") == prompts.version("revise")
    assert prompts.version("revise") != prompts.version("persona_expand")


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
    rng = random.Random(0)
    assert {TASK_SPECS["retrieval"].attributes(rng, 100)["num_words"] for _ in range(50)} == {50, 100}


def test_seed_personas_ship_and_normalise():
    assert len(seed_personas()) >= 5
    assert normalized("A  Nurse, who codes!") == normalized("a nurse who codes")
