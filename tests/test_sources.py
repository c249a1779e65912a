import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fake_llm import FakeChatServer

from embedfactory.config import Endpoint
from embedfactory.llm.client import ChatClient
from embedfactory.synth.brainstorm import brainstorm_tasks, deal_topics
from embedfactory.synth.personas import sample_personas
from embedfactory.synth.sources import MAX_DEPTH, load_personas, load_topics


def test_shipped_topics_are_cut_to_four_levels_and_distinct():
    topics = load_topics()
    assert len(topics) >= 30 and len(set(topics)) == len(topics)
    assert max(t.count("/") + 1 for t in topics) == MAX_DEPTH
    assert "Science/Physics/Aerodynamics/Wing_Design" in topics


def test_user_topics_file(tmp_path):
    (tmp_path / "t.txt").write_text("# comment\nA/B/C/D/E/F\nA/B/C/D\n\nX/Y\n")
    assert load_topics(str(tmp_path / "t.txt")) == ["A/B/C/D", "X/Y"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="no category paths"):
        load_topics(str(tmp_path / "empty.txt"))


@pytest.mark.parametrize("kind", ["parquet", "jsonl", "datasets"])
def test_personas_load_from_user_sources(tmp_path, kind):
    people = ["A beekeeper in Crete", "A tram driver in Lisbon", "A beekeeper in Crete", ""]
    path = tmp_path / f"p.{kind}"
    if kind == "parquet":
        pq.write_table(pa.table({"persona": people, "other": [1, 2, 3, 4]}), path)
    elif kind == "jsonl":
        path.write_text("\n".join(json.dumps({"persona": p}) for p in people))
    else:
        datasets.Dataset.from_dict({"persona": people}).save_to_disk(str(path))
    assert load_personas(str(path)) == ["A beekeeper in Crete", "A tram driver in Lisbon"]


def test_a_source_without_a_persona_column_names_its_columns(tmp_path):
    pq.write_table(pa.table({"text": ["x"]}), tmp_path / "p.parquet")
    with pytest.raises(ValueError, match="no 'persona' column \\(columns: \\['text'\\]"):
        load_personas(str(tmp_path / "p.parquet"))


def test_sampled_personas_make_no_calls_and_are_reproducible():
    people = [f"A person number {i}" for i in range(20)]
    first = sample_personas(people, 5, seed=1, source="file.parquet")
    assert len(first.rows) == 5 and first.usage.calls == 0
    assert [r["persona"] for r in first.rows] == [r["persona"] for r in sample_personas(people, 5, 1, "file.parquet").rows]


def test_each_brainstorm_prompt_speaks_as_the_persona_inside_its_own_topic():
    persona = {"persona_id": "p1", "persona": "A ferry engineer"}
    topics = [f"Science/Field {chr(65 + i)}" for i in range(20)]
    with FakeChatServer() as server:
        client = ChatClient(Endpoint(base_url=server.base_url, model="fake"), server.base_url)
        types = [["retrieval"] * 6 + ["sts"]]
        out = brainstorm_tasks(client, [persona], types, seed=0,
                               topics=deal_topics(types, topics, 1, seed=0), per_topic=1)
    assert len(server.requests) == 6  # sts has a fixed task: no call
    for request in server.requests:
        system, user = request["messages"]
        assert system["role"] == "system" and "A ferry engineer" in system["content"]
        assert user["role"] == "user" and "Keep every task inside this topic" in user["content"]
    asked = [next(t for t in topics if t in r["messages"][1]["content"]) for r in server.requests]
    assert len(set(asked)) > 1  # topics are drawn per prompt, not once per persona
    retrieval = [r for r in out.rows if r["task_type"] == "retrieval"]
    assert sorted(r["topic"] for r in retrieval) == sorted(asked)
    assert [r["task"] for r in out.rows if r["task_type"] == "sts"] == ["Retrieve semantically similar text."]
    assert [r["topic"] in topics for r in out.rows if r["task_type"] == "sts"] == [True]  # STS gets a topic too


def test_topics_are_dealt_one_task_per_topic_before_any_repeats():
    """SPEED's one task per topic: over the run, a type's k-th prompt gets the k-th card of a shuffled
    deck, so no (type, topic) repeats until every topic has had one; fixed types are dealt too."""
    topics = [f"Topic/{i}" for i in range(10)]
    types = [["retrieval", "sts"], ["retrieval", "retrieval"], ["classification", "sts"]] * 4
    dealt = deal_topics(types, topics, per_topic=1, seed=3)
    retrieval = [t for d in dealt for t in d.get("retrieval", [])]
    assert len(retrieval) == 12 and len(set(retrieval[:10])) == 10  # a full pass before a repeat
    assert set(retrieval[10:]) <= set(topics)
    sts = [t for d in dealt for t in d.get("sts", [])]
    assert len(sts) == 8 and len(set(sts)) == 8
    assert dealt == deal_topics(types, topics, per_topic=1, seed=3)  # every shard computes the same deal
    assert deal_topics(types[:5], topics, per_topic=1, seed=3) == dealt[:5]  # a shard deals its prefix only
    assert deal_topics(types, None, 1, 3)[0] == {"retrieval": [None], "sts": [None]}


def test_prompts_sharing_a_topic_are_told_what_was_already_proposed():
    persona = {"persona_id": "p1", "persona": "A ferry engineer"}
    types = [["retrieval"] * 4]
    dealt = deal_topics(types, ["Science/Tides", "Arts/Opera"], 1, seed=0)
    with FakeChatServer() as server:
        client = ChatClient(Endpoint(base_url=server.base_url, model="fake"), server.base_url)
        out = brainstorm_tasks(client, [persona], types, seed=0, topics=dealt, per_topic=1)
    first, later = server.requests[:2], server.requests[2:]
    assert all("already proposed" not in r["messages"][1]["content"] for r in first)
    for request in later:
        user = request["messages"][1]["content"]
        topic = next(t for t in ("Science/Tides", "Arts/Opera") if t in user)
        earlier = [r["task"] for r in out.rows[:2] if r["topic"] == topic]
        assert "already proposed" in user and earlier and all(t in user for t in earlier)


def test_a_malformed_json_lines_source_names_the_file_and_the_line(tmp_path):
    from embedfactory.synth.sources import load_personas

    path = tmp_path / "personas.jsonl"
    path.write_text('{"persona": "a nurse"}\n\n{"persona": \n')
    with pytest.raises(ValueError, match=r"personas\.jsonl:3: not valid JSON"):
        load_personas(str(path))
    path.write_text('["a nurse"]\n')
    with pytest.raises(ValueError, match=r"personas\.jsonl:1: a line must be a JSON object, not list"):
        load_personas(str(path))
