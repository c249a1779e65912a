"""The revisor stage (SPEED): original, revision and reason kept; a failed reply keeps the original."""
import json

from fake_llm import FakeChatServer

from embedfactory.config import Endpoint
from embedfactory.llm.client import ChatClient
from embedfactory.synth.revise import revise_examples, skip_revision


def example(i: int, query: str) -> dict:
    fields = {"user_query": query, "positive_document": f"doc {i}", "hard_negative_document": f"other {i}"}
    return {"example_id": f"e{i}", "task_type": "retrieval", "task": "Given a question, find the answer.",
            "fields": json.dumps(fields), "anchor": query, "positive": f"doc {i}", "negative": f"other {i}"}


def reply(reason: str, query: str, i: int) -> str:
    return json.dumps({"reason": reason, "revision": {
        "user_query": query, "positive_document": f"doc {i}", "hard_negative_document": f"other {i}"}})


def test_revisor_keeps_original_revision_and_reason_and_survives_a_bad_reply():
    examples = [example(0, "how fix bike"), example(1, "how to fix a flat tyre"), example(2, "best glue")]
    script = [reply("The query is ungrammatical.", "how do I fix my bike", 0),
              reply("Accurate and complete.", "how to fix a flat tyre", 1),
              "not json", "still not json"]  # example 2: both attempts fail
    with FakeChatServer(script) as server:  # one request at a time: the script follows the rows
        client = ChatClient(Endpoint(base_url=server.base_url, model="revisor-m", concurrency=1),
                            server.base_url, max_attempts=2)
        out = revise_examples(client, examples, seed=0)
    revised, unchanged, failed = out.rows
    assert revised["revision_status"] == "revised" and revised["anchor"] == "how do I fix my bike"
    assert json.loads(revised["original_fields"])["user_query"] == "how fix bike"
    assert revised["revision_reason"] == "The query is ungrammatical." and revised["model"] == "revisor-m"
    assert unchanged["revision_status"] == "unchanged"
    assert json.loads(unchanged["fields"]) == json.loads(unchanged["original_fields"])
    assert failed["revision_status"] == "rejected" and failed["status"] == "ok"  # the original stays in use
    assert failed["anchor"] == "best glue" and failed["reject_reason"].startswith("invalid JSON")
    assert out.rejected == 1 and out.usage.calls == 4
    assert all("Relevance" in r["messages"][0]["content"] for r in server.requests)


def test_skipping_the_revisor_passes_every_example_unchanged_without_calls():
    out = skip_revision([example(0, "q")])
    [row] = out.rows
    assert row["revision_status"] == "skipped" and row["original_fields"] == row["fields"]
    assert out.usage.calls == 0 and out.rejected == 0


def test_a_revision_that_fails_a_gate_leaves_the_original_in_use():
    attributes = {"query_type": "long-tail", "query_length": "5 to 15 words", "clarity": "clear",
                  "difficulty": "college", "language": "English"}  # no num_words: the documents are stubs
    examples = [{**example(i, q), "attributes": json.dumps(attributes)}
                for i, q in enumerate(["which tyre levers fit tubeless rims", "can a cracked carbon frame be repaired"])]
    # the embedded model's revisor turned a query into the prompt's own words (a real reply)
    script = [reply("The query does not fit the task.", "What would you type for this task", 0),
              reply("The query is vague.", "can a cracked carbon bike frame be safely repaired", 1)]
    with FakeChatServer(script) as server:
        client = ChatClient(Endpoint(base_url=server.base_url, model="revisor-m", concurrency=1),
                            server.base_url, max_attempts=1)
        out = revise_examples(client, examples, seed=0)
    kept, revised = out.rows
    # the revisor judges against what generation asked for (SPEED): the attributes are in its prompt
    assert all("- query length: 5 to 15 words\n- query type: long-tail" in r["messages"][1]["content"]
               for r in server.requests)
    assert kept["revision_status"] == "kept-original"
    assert kept["revision_reason"].startswith("gate echo: user_query repeats the prompt")
    assert kept["anchor"] == "which tyre levers fit tubeless rims" and kept["fields"] == kept["original_fields"]
    assert kept["status"] == "ok" and out.rejected == 0
    assert revised["revision_status"] == "revised"
    assert revised["anchor"] == "can a cracked carbon bike frame be safely repaired"


def test_align_trains_the_revisor_on_the_prompt_the_revise_stage_sends():
    from embedfactory.align.data import revisor_rows
    from embedfactory.synth.revise import revise_messages

    row = {**example(0, "how fix bike"), "attributes": json.dumps({"query_length": "5 to 15 words"}),
           "revision_status": "revised", "revision_reason": "Ungrammatical query.",
           "original_fields": example(0, "how fix bike")["fields"],
           "fields": json.dumps({"user_query": "how do I fix my bike", "positive_document": "doc 0",
                                 "hard_negative_document": "other 0"})}
    [sft] = revisor_rows([row])
    assert sft["prompt"] == revise_messages(row, row["original_fields"])
    assert "- query length: 5 to 15 words" in sft["prompt"][1]["content"]
