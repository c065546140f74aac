"""The context size: llama.cpp pads it to a multiple of 256, and rfsdk must agree with it."""

from __future__ import annotations

import llama_cpp
import pytest

from rfsdk import GuardedChat, SamplingConfig
from rfsdk.demo_model import DEMO_BENIGN_REPLY

GREEDY = SamplingConfig(temperature=0.0)


def test_an_odd_n_ctx_is_padded_and_long_prompts_fit(demo_model_path):
    chat = GuardedChat(demo_model_path, n_ctx=300, sampling=GREEDY)
    assert chat.llm.n_ctx() == 512 and len(chat.llm.input_ids) == 512
    reply = chat.send("hi " * 160)  # ~320 tokens: more than the 300 asked for
    assert reply.text == DEMO_BENIGN_REPLY and reply.usage.prompt_tokens > 300


def test_a_loaded_llama_with_an_unpadded_context_is_refused(demo_model_path):
    llm = llama_cpp.Llama(model_path=str(demo_model_path), n_ctx=300, verbose=False)
    with pytest.raises(ValueError, match="n_ctx=512"):
        GuardedChat(llm)
