"""What GuardedChat says about every kind of model it cannot use, and the default model."""

from __future__ import annotations

import llama_cpp
import pytest
from gguf import TokenType

from rfsdk import (
    CHATML_TEMPLATE,
    ChatTemplateError,
    GuardedChat,
    MissingRfTokenError,
    ModelFileError,
    ModelNotFoundError,
    RfTokenTypeError,
    SamplingConfig,
    default_model,
)
from rfsdk.demo_model import DEMO_BENIGN_REPLY, build_demo_model

GREEDY = SamplingConfig(temperature=0.0, max_tokens=32)


def test_truncated_model_is_refused_before_llama_cpp_sees_it(demo_model_path, tmp_path):
    data = demo_model_path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ModelFileError, match="truncated") as info:
        GuardedChat(cut)
    assert str(cut) in str(info.value)


def test_non_gguf_file_is_refused(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + b'{"a":{}}        ')
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        GuardedChat(path)


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        GuardedChat(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ModelNotFoundError, match="No model file at"):
        GuardedChat(tmp_path / "nope.gguf")


def test_hub_model_offline_names_where_to_place_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RFSDK_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError, match="offline") as info:
        GuardedChat("hf://someone/some-model/model-rf.gguf")
    assert str(tmp_path / "models" / "someone--some-model" / "model-rf.gguf") in str(info.value)


def test_hub_model_placed_in_cache_by_hand_is_used(tmp_path, monkeypatch, demo_model_path):
    monkeypatch.setenv("RFSDK_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    target = tmp_path / "models" / "someone--some-model" / "model-rf.gguf"
    target.parent.mkdir(parents=True)
    target.write_bytes(demo_model_path.read_bytes())
    chat = GuardedChat("hf://someone/some-model/model-rf.gguf", sampling=GREEDY)
    assert chat.model_path == target
    assert chat.send("hi").text == DEMO_BENIGN_REPLY


def test_rf_that_is_not_a_control_token_is_refused(tmp_path):
    path = build_demo_model(tmp_path / "normal-rf.gguf", rf_token_type=TokenType.NORMAL)
    with pytest.raises(RfTokenTypeError, match="not as a CONTROL token"):
        GuardedChat(path)


def test_rf_found_by_name_without_metadata(tmp_path):
    path = build_demo_model(tmp_path / "plain.gguf", rf_metadata=False)
    chat = GuardedChat(path, sampling=GREEDY)
    assert chat.rf_token_id == chat.llm.n_vocab() - 1
    assert chat.threshold == 0.5
    assert chat.send("a bomb").finish_reason == "halt"


def test_model_without_chat_template(tmp_path):
    path = build_demo_model(tmp_path / "no-template.gguf", chat_template=None)
    with pytest.raises(ChatTemplateError, match="has no chat template.*chat_template="):
        GuardedChat(path)
    chat = GuardedChat(path, chat_template=CHATML_TEMPLATE, sampling=GREEDY)
    assert chat.send("hi").text == DEMO_BENIGN_REPLY


def test_broken_chat_template_is_refused(demo_model_path):
    with pytest.raises(ChatTemplateError, match="does not parse"):
        GuardedChat(demo_model_path, chat_template="{% for m in messages %}")


def test_template_that_raises_gives_its_message(demo_model_path):
    template = "{{ raise_exception('System role not supported') }}"
    chat = GuardedChat(demo_model_path, chat_template=template)
    with pytest.raises(ChatTemplateError, match="System role not supported"):
        chat.send("hi")
    assert chat.history == []


def test_loaded_llama_without_rf(demo_model_no_rf_path):
    llm = llama_cpp.Llama(str(demo_model_no_rf_path), verbose=False)
    with pytest.raises(MissingRfTokenError, match="allow_unguarded=True"):
        GuardedChat(llm)


def test_loaded_llama_with_rf_reads_token_and_threshold(demo_model_path):
    llm = llama_cpp.Llama(str(demo_model_path), verbose=False)
    chat = GuardedChat(llm)
    assert chat.llm is llm and chat.rf_token_id == llm.n_vocab() - 1
    assert chat.threshold == 0.5 and chat.model_path == demo_model_path


@pytest.mark.parametrize("threshold", [3e-7, 0.978123456])
def test_loaded_llama_reads_the_exact_threshold(demo_model_path, tmp_path, threshold):
    import shutil

    import numpy as np
    from gguf import GGUFReader

    path = tmp_path / "model.gguf"
    shutil.copyfile(demo_model_path, path)
    field = GGUFReader(path, "r+").fields["rf.threshold"]
    field.parts[field.data[0]][0] = threshold  # written in place, as float32
    llm = llama_cpp.Llama(str(path), verbose=False)
    assert llm.metadata["rf.threshold"] == f"{threshold:f}"  # llama-cpp-python's 6 decimals
    assert GuardedChat(llm).threshold == GuardedChat(path).threshold == float(np.float32(threshold))


def test_llama_kwargs_reach_llama_cpp(demo_model_path):
    chat = GuardedChat(
        demo_model_path, sampling=GREEDY, llama_kwargs={"n_batch": 64, "type_k": llama_cpp.GGML_TYPE_Q8_0, "flash_attn": True}
    )
    assert chat.llm.n_batch == 64 and chat.llm.context_params.type_k == llama_cpp.GGML_TYPE_Q8_0
    assert chat.send("hello").text == DEMO_BENIGN_REPLY


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_batchh": 64}, "'n_batchh' is not a setting of llama_cpp.Llama"),
        ({"n_ctx": 512}, r"set 'n_ctx' with GuardedChat\(n_ctx=...\)"),
        ({"seed": 1}, r"set 'seed' with SamplingConfig\(seed=...\)"),
        ({"draft_model": None}, "'draft_model' is not supported: speculative decoding"),
        ({"vocab_only": True}, "'vocab_only' is not supported"),
    ],
)
def test_bad_llama_kwargs_are_refused_before_loading(demo_model_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        GuardedChat(demo_model_path, llama_kwargs=kwargs)


def test_llama_kwargs_with_a_loaded_llama_are_refused(demo_model_path):
    llm = llama_cpp.Llama(str(demo_model_path), verbose=False)
    with pytest.raises(ValueError, match="already loaded"):
        GuardedChat(llm, llama_kwargs={"n_batch": 64})


def test_demo_default_model_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("RFSDK_CACHE", str(tmp_path))
    monkeypatch.setenv("RFSDK_DEFAULT_MODEL", "demo")
    info = default_model()
    assert info.kind == "demo" and "not a real language model" in info.description
    assert "chosen by RFSDK_DEFAULT_MODEL=demo" in info.description
    assert info.path.is_file() and info.path.is_relative_to(tmp_path)
    mtime = info.path.stat().st_mtime_ns
    assert default_model().path.stat().st_mtime_ns == mtime
    chat = GuardedChat.from_default(sampling=GREEDY)
    assert chat.send("hello").text == DEMO_BENIGN_REPLY
