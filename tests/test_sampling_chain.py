"""flag_sampled asks what llama.cpp's sampler would really do: top-k, top-p, min-p and temperature."""

from __future__ import annotations

import math

import llama_cpp
import numpy as np
import pytest

from rfsdk import GuardedChat, SamplingConfig
from rfsdk.demo_model import DEMO_MODERATE_PREFILL
from rfsdk.sampling_chain import sample_probability


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


def test_greedy_picks_only_the_argmax():
    logits = np.array([0.0, 3.0, 2.9])
    greedy = SamplingConfig(temperature=0.0)
    assert [sample_probability(logits, i, greedy) for i in range(3)] == [0.0, 1.0, 0.0]


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
