"""rf-serve's /v1/moderations and --audit-log, on the demo model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import openai
import pytest
from server_process import Server, rf_serve

from rfsdk.demo_model import DEMO_TRIGGER_WORD

MODEL = "demo"
HARMFUL = f"How do I build a {DEMO_TRIGGER_WORD}?"


def test_moderation_of_one_text(client: openai.OpenAI) -> None:
    (benign,) = client.moderations.create(input="Hello there").results
    assert benign.flagged is False
    assert benign.categories.model_extra["rf"] is False
    assert benign.category_scores.model_extra["rf"] < 1e-3
    (harmful,) = client.moderations.create(input=HARMFUL, model="omni-moderation-latest").results
    assert harmful.flagged is True
    assert harmful.categories.model_extra["rf"] is True
    assert harmful.category_scores.model_extra["rf"] > 0.99


def test_moderation_of_a_list(server: Server) -> None:
    body = {"model": MODEL, "input": ["Hello", HARMFUL, "Good morning"]}
    response = httpx.post(server.url + "/moderations", json=body)
    assert response.status_code == 200
    data = response.json()
    assert data["id"].startswith("modr-") and data["model"] == MODEL
    assert [r["flagged"] for r in data["results"]] == [False, True, False]
    assert all(r["category_applied_input_types"] == {"rf": ["text"]} for r in data["results"])
    parts = {"input": [{"type": "text", "text": "A "}, {"type": "text", "text": DEMO_TRIGGER_WORD}]}
    assert [r["flagged"] for r in httpx.post(server.url + "/moderations", json=parts).json()["results"]] == [True]


@pytest.mark.parametrize(
    "body,status,words",
    [
        ({}, 400, "input is required"),
        ({"input": []}, 400, "empty list"),
        ({"input": [1, 2]}, 400, "list of strings"),
        ({"input": 5}, 400, "input"),
        ({"input": "  "}, 400, "input[0] is empty"),
        ({"input": ["a"] * 33}, 400, "at most 32"),
        ({"input": "hi", "model": "gpt-4o"}, 404, "serves 'demo'"),
        ({"input": "hi", "extra": 1}, 400, "extra is not a field"),
        ({"input": "word " * 6000}, 400, "context"),
    ],
)
def test_bad_moderation_requests(server: Server, body: dict, status: int, words: str) -> None:
    response = httpx.post(server.url + "/moderations", json=body)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]


def test_moderation_with_the_text_classifier(demo_model_path: Path) -> None:
    with rf_serve(demo_model_path, "--classifier", "text") as server:
        (result,) = httpx.post(server.url + "/moderations", json={"input": "How do I make a pipe bomb at home?"}).json()["results"]
    assert "classifier" in result["categories"] and 0.0 <= result["category_scores"]["classifier"] <= 1.0
    assert result["flagged"] is True


# ----- audit log -------------------------------------------------------------------------------


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_audit_log(demo_model_path: Path, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    sha = hashlib.sha256(demo_model_path.read_bytes()).hexdigest()
    with rf_serve(demo_model_path, "--audit-log", str(log)) as server:
        client = server.client()
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello"}])
        halted = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": HARMFUL}])
        streamed = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": HARMFUL}], stream=True))
        client.moderations.create(input=["Hello", HARMFUL])
    chat, chat_streamed, moderation = _records(log)  # the benign turn and input leave no record
    assert chat["request_id"] == halted.id and chat_streamed["request_id"] == streamed[0].id
    assert chat["kind"] == "chat" and chat["model"] == MODEL and chat["model_sha256"] == sha
    assert chat["threshold"] == pytest.approx(0.5) and chat["rf_peak"] > 0.99
    assert chat["action"] == "halt" and chat["finish_reason"] == "content_filter"
    assert chat["flags"][0]["position"] == 0 and chat["time"].endswith("+00:00")
    assert "prompt" not in chat and "reply" not in chat
    assert moderation["kind"] == "moderation" and moderation["input_index"] == 1 and "input" not in moderation


def test_audit_log_with_texts(demo_model_path: Path, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    with rf_serve(demo_model_path, "--audit-log", str(log), "--audit-text", "--refusal", "No.") as server:
        client = server.client()
        reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": HARMFUL}])
        assert reply.choices[0].message.content == "No."
        client.moderations.create(input=HARMFUL)
    chat, moderation = _records(log)
    assert chat["prompt"] == HARMFUL and chat["reply"] == "No."
    assert moderation["input"] == HARMFUL
