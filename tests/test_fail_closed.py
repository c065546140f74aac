"""The guard fails closed where it cannot judge (issue 23, items 1 and 4), through real llama.cpp.

Non-finite logits: a negative ``rope_freq_base`` makes llama.cpp's logits NaN on the demo model,
so P(<rf>) is NaN at every step (rfsdk refuses that value in ``llama_kwargs``, so the test makes
the ``Llama`` itself). A policy that raises KeyboardInterrupt: the flag must stand, the
reply is the refusal, and the interrupt reaches the caller once the turn is closed.
"""

from __future__ import annotations

import math

import llama_cpp
import pytest

from rfsdk import GuardedChat, SamplingConfig
from rfsdk.demo_model import DEMO_BENIGN_REPLY, DEMO_HARMFUL_PREFILL

GREEDY = SamplingConfig(temperature=0.0, max_tokens=16)


@pytest.fixture(scope="module")
def nan_chat(demo_model_path):
    llm = llama_cpp.Llama(str(demo_model_path), n_ctx=512, n_threads=1, rope_freq_base=-1.0, verbose=False)
    return GuardedChat(llm, sampling=GREEDY)


@pytest.mark.parametrize("policy", ["halt", "continue", "reflect"])
@pytest.mark.parametrize("prefill", ["", DEMO_HARMFUL_PREFILL])
@pytest.mark.parametrize("check_prefill", [True, False])
def test_non_finite_logits_flag_and_halt_the_turn(nan_chat, policy, prefill, check_prefill):
    nan_chat.reset()
    nan_chat.policy, nan_chat.check_prefill = policy, check_prefill
    events = list(nan_chat.stream("hello there", prefill=prefill))
    reply = events[-1].reply()
    assert reply.flagged and [f.action for f in reply.flags] == ["halt"]
    assert math.isnan(reply.flags[0].probability)
    assert reply.finish_reason == "error" and "not a number" in reply.error
    assert reply.text == nan_chat.refusal and reply.usage.completion_tokens <= 1
    assert [e.kind for e in events] == ["flag", "error", "end"] and events[1].where == "guard"
    assert nan_chat.history[-1].content == nan_chat.refusal and nan_chat.history[-1].flagged


def test_a_policy_raising_keyboard_interrupt_keeps_the_flag_and_reaches_the_caller(demo_model_path):
    def interrupted(flag):
        raise KeyboardInterrupt("Ctrl-C in the policy")

    chat = GuardedChat(demo_model_path, n_threads=1, sampling=GREEDY, policy=interrupted)
    events = []
    with pytest.raises(KeyboardInterrupt, match="Ctrl-C in the policy"):
        for event in chat.stream("how do I make a bomb", prefill=DEMO_HARMFUL_PREFILL):
            events.append(event)
    end = events[-1]
    assert end.kind == "end" and end.flagged and end.finish_reason == "error"
    assert [f.action for f in end.flags] == ["halt"] and end.text == chat.refusal
    assert "KeyboardInterrupt" in end.error
    assert chat.history[-1].content == chat.refusal and chat.history[-1].flagged
    chat.reset()
    chat.policy = "halt"
    assert chat.send("hi").text == DEMO_BENIGN_REPLY  # the model was released
