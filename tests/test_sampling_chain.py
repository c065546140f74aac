"""flag_sampled asks what llama.cpp's sampler would really do: top-k, top-p, min-p and temperature."""

from __future__ import annotations

import math

import llama_cpp
import numpy as np
import pytest

from rfsdk import GuardedChat, SamplingConfig
from rfsdk.demo_model import DEMO_ECHO_PIECE, DEMO_ECHO_PREFILL, DEMO_MODERATE_PREFILL, RF_TOKEN_TEXT
from rfsdk._sampling_chain import sample_probability


def chain_step_by_step(logits: np.ndarray, token: int, s: SamplingConfig) -> float:
    """llama.cpp's chain written out literally: sort, cut at each stage, softmax what is left."""
    order = sorted(range(len(logits)), key=lambda i: -logits[i])
    if s.top_k > 0:
        order = order[: s.top_k]
    if s.top_p < 1:
        z = sum(math.exp(logits[i]) for i in order)
        kept, total = [], 0.0
        for i in order:
            kept.append(i)
            total += math.exp(logits[i]) / z
            if total >= s.top_p:
                break
        order = kept
    if s.min_p > 0:
        best = logits[order[0]]
        order = [i for i in order if math.exp(logits[i] - best) >= s.min_p]
    if token not in order:
        return 0.0
    z = sum(math.exp(logits[i] / s.temperature) for i in order)
    return math.exp(logits[token] / s.temperature) / z


CONFIGS = [
    SamplingConfig(),
    SamplingConfig(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0),
    SamplingConfig(temperature=1.3, top_k=5, top_p=1.0, min_p=0.0),
    SamplingConfig(temperature=0.5, top_k=0, top_p=0.6, min_p=0.0),
    SamplingConfig(temperature=1.0, top_k=0, top_p=1.0, min_p=0.2),
    SamplingConfig(temperature=0.8, top_k=8, top_p=0.9, min_p=0.1),
]


@pytest.mark.parametrize("sampling", CONFIGS, ids=lambda s: f"t{s.temperature}-k{s.top_k}-p{s.top_p}-m{s.min_p}")
def test_sample_probability_equals_the_chain_written_out(sampling):
    rng = np.random.default_rng(0)
    for _ in range(40):
        logits = rng.normal(scale=2.5, size=60)
        for token in (int(logits.argmax()), int(np.argsort(logits)[-3]), int(np.argsort(logits)[-9]), int(logits.argmin())):
            expected = chain_step_by_step(logits, token, sampling)
            assert sample_probability(logits, token, sampling) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def repeat_penalty_written_out(logits: np.ndarray, recent: list[int], penalty: float) -> np.ndarray:
    out = logits.copy()
    for i in set(recent):
        out[i] = out[i] * penalty if out[i] <= 0 else out[i] / penalty
    return out


@pytest.mark.parametrize("penalty", [1.3, 0.8])
def test_the_repeat_penalty_comes_first_once_per_recent_token(penalty):
    rng = np.random.default_rng(1)
    for sampling in CONFIGS[:3]:
        sampling = sampling.model_copy(update={"repeat_penalty": penalty})
        for _ in range(20):
            logits = rng.normal(scale=2.5, size=60)
            recent = [int(i) for i in rng.integers(0, 60, size=12)] + [int(logits.argmax())] * 2
            penalized = repeat_penalty_written_out(logits, recent, penalty)
            for token in (int(logits.argmax()), int(np.argsort(logits)[-2]), recent[0]):
                expected = chain_step_by_step(penalized, token, sampling)
                assert sample_probability(logits, token, sampling, recent) == pytest.approx(expected, rel=1e-9, abs=1e-15)
                assert sample_probability(logits, token, sampling.model_copy(update={"repeat_penalty": 1.0}), recent) == (
                    pytest.approx(chain_step_by_step(logits, token, sampling), rel=1e-9, abs=1e-15)
                )


def test_greedy_picks_only_the_argmax():
    logits = np.array([0.0, 3.0, 2.9])
    greedy = SamplingConfig(temperature=0.0)
    assert [sample_probability(logits, i, greedy) for i in range(3)] == [0.0, 1.0, 0.0]


def test_an_overflowing_repeat_penalty_counts_as_possibly_sampled():
    # A positive float32 logit divided by a tiny penalty overflows to inf: the sampler's pick
    # cannot be predicted, so the guard must treat <rf> as possibly sampled (fail closed), not NaN.
    logits = np.array([30.0, 1.0, -2.0], dtype=np.float32)
    sampling = SamplingConfig(repeat_penalty=1e-300)
    with np.errstate(all="raise"):
        assert sample_probability(logits, 2, sampling, recent=[0]) == 1.0


def test_a_tiny_temperature_on_float32_logits_is_greedy_not_nan():
    # llama.cpp's logits are float32; 1e-300 is 0 in float32, so float32 arithmetic gave 0 / 0.
    logits = np.array([49.0, 24.5, 0.0], dtype=np.float32)
    sampling = SamplingConfig(temperature=1e-300, top_p=1e-30)
    with np.errstate(all="raise"):
        assert [sample_probability(logits, i, sampling) for i in range(3)] == [1.0, 0.0, 0.0]


@pytest.fixture(scope="module")
def llm(demo_model_path):
    return llama_cpp.Llama(model_path=str(demo_model_path), n_ctx=512, verbose=False)


def sampled_flags(llm, sampling: SamplingConfig, turns: int = 30) -> int:
    # After DEMO_MODERATE_PREFILL, P(<rf>) is about 0.3 and the designed token holds the rest;
    # the threshold is above it, so only a sampled <rf> can flag.
    chat = GuardedChat(llm, policy="continue", threshold=0.9, flag_sampled=True, sampling=sampling)
    flagged = 0
    for _ in range(turns):
        chat.reset()
        flagged += bool(chat.send("Hi", prefill=DEMO_MODERATE_PREFILL).flags)
    return flagged


def test_flag_sampled_counts_rf_only_where_the_sampler_could_pick_it(llm):
    free = SamplingConfig(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, max_tokens=8, seed=1)
    assert 3 <= sampled_flags(llm, free) <= 18  # about 0.3 of 30 turns
    assert sampled_flags(llm, free.model_copy(update={"top_k": 1})) == 0  # <rf> is second
    assert sampled_flags(llm, free.model_copy(update={"min_p": 0.5})) == 0  # 0.3 / 0.7 < 0.5
    assert sampled_flags(llm, free.model_copy(update={"top_p": 0.6})) == 0  # the designed token alone holds 0.7
    assert sampled_flags(llm, free.model_copy(update={"top_k": 2})) >= 3


def raw_replies(llm, prefill: str, repeat_penalty: float) -> list[str]:
    prompt = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n" + prefill
    tokens = llm.tokenize(prompt.encode(), special=True)
    picked = []
    for token in llm.generate(tokens, temp=0.0, repeat_penalty=repeat_penalty):
        picked.append(llm.detokenize([token], special=True).decode())
        if len(picked) == 2:
            return picked


ECHO_CONFIGS = [
    SamplingConfig(temperature=0.0, max_tokens=4),
    SamplingConfig(temperature=1.0, top_k=1, max_tokens=4, seed=1),
]


@pytest.mark.parametrize("prefill", [DEMO_ECHO_PREFILL, DEMO_ECHO_PREFILL + DEMO_ECHO_PIECE])
@pytest.mark.parametrize("sampling", ECHO_CONFIGS, ids=["greedy", "top_k-1"])
def test_flag_sampled_applies_the_repeat_penalty_to_generated_tokens_only(llm, prefill, sampling):
    # llama.cpp itself: the penalty on the generated piece (never the prefilled one) makes
    # <rf> its pick at the second step, and only with the penalty.
    assert raw_replies(llm, prefill, 1.5) == [DEMO_ECHO_PIECE, RF_TOKEN_TEXT]
    assert raw_replies(llm, prefill, 1.0) == [DEMO_ECHO_PIECE, DEMO_ECHO_PIECE]
    penalized = sampling.model_copy(update={"repeat_penalty": 1.5})
    chat = GuardedChat(llm, policy="continue", threshold=0.9, flag_sampled=True, sampling=penalized)
    reply = chat.send("Hi", prefill=prefill)
    assert [(f.position, f.source) for f in reply.flags] == [(1, "sampled")]
    chat = GuardedChat(llm, policy="continue", threshold=0.9, flag_sampled=True, sampling=sampling)
    assert chat.send("Hi", prefill=prefill).flags == []
