"""Runs of flagged steps: the policy is asked again whenever P(<rf>) rises within a run.

Issue 23, item 3: with ``halt if probability >= 0.8 else continue`` a run of flagged steps with
P = 0.68, 0.89, 0.79, 0.39 used to ask the policy at 0.68 only, and the turn ran on. Now a run
raises a flag at its first step and again at every step whose P(<rf>) is above the highest
P(<rf>) already flagged in the run.
"""

from __future__ import annotations

import math
import random
import threading

import llama_cpp
import numpy as np
import pytest

from rfsdk import GuardedChat, SamplingConfig
from rfsdk.demo_model import (
    DEMO_HARMFUL_CONTINUATION,
    DEMO_HARMFUL_ENDING,
    DEMO_HARMFUL_PREFILL,
    DEMO_HARMFUL_RF_PROBABILITY,
)
from rfsdk.events import Flag
from rfsdk._guard import TurnGuard

GREEDY = SamplingConfig(temperature=0.0, max_tokens=64)


def readme_policy(asked: list[float]):
    """The README's probability-scaled policy, recording the probabilities it is asked about."""

    def policy(flag: Flag) -> str:
        asked.append(flag.probability)
        return "halt" if flag.probability >= 0.8 else "continue"

    return policy


@pytest.fixture(scope="module")
def llm(demo_model_path):
    return llama_cpp.Llama(str(demo_model_path), n_ctx=2048, n_threads=1, n_threads_batch=1, verbose=False)


# A threshold far below every step's P(<rf>) makes the whole demo reply one run of flagged steps:
# P(<rf>) is about 4e-18 at each step, then DEMO_HARMFUL_RF_PROBABILITY (0.9) where <rf> is the
# argmax after DEMO_HARMFUL_CONTINUATION, then about 4e-18 again.
EVERY_STEP = 1e-30


def test_a_rising_run_asks_the_policy_again_and_the_readme_policy_halts(llm):
    asked: list[float] = []
    chat = GuardedChat(llm, sampling=GREEDY, policy=readme_policy(asked), threshold=EVERY_STEP, check_prefill=False)
    reply = chat.send("Explain it", prefill=DEMO_HARMFUL_PREFILL)
    assert len(asked) == 2 and asked[0] < 1e-10
    assert asked[1] == pytest.approx(DEMO_HARMFUL_RF_PROBABILITY, abs=1e-3)
    assert [f.action for f in reply.flags] == ["continue", "halt"]
    assert reply.flags[1].text_so_far == DEMO_HARMFUL_PREFILL + DEMO_HARMFUL_CONTINUATION
    assert (reply.finish_reason, reply.text) == ("halt", chat.refusal)


def test_a_run_is_not_asked_again_when_the_risk_does_not_rise(llm):
    asked: list[float] = []

    def policy(flag: Flag) -> str:
        asked.append(flag.probability)
        return "continue"

    chat = GuardedChat(llm, sampling=GREEDY, policy=policy, threshold=EVERY_STEP, check_prefill=False)
    events = list(chat.stream("Explain it", prefill=DEMO_HARMFUL_PREFILL))
    steps = [e.rf_probability for e in events if e.kind == "token"]
    end = events[-1]
    assert end.text == DEMO_HARMFUL_PREFILL + DEMO_HARMFUL_CONTINUATION + DEMO_HARMFUL_ENDING
    # every step is flagged (one run); the policy heard its start and its one rise, not the fall after it
    assert min(steps) >= EVERY_STEP and len(steps) > len(asked) == 2
    assert asked == sorted(asked) and [f.probability for f in end.flags] == asked
    assert end.flags[1].text_so_far == DEMO_HARMFUL_PREFILL + DEMO_HARMFUL_CONTINUATION


# ----- the exact sequence of the issue, through TurnGuard's own logits handling ---------------


def _scores(p_rf: float) -> np.ndarray:
    """Logits of a two-token vocabulary (0: end of turn, 1: <rf>) with P(<rf>) = ``p_rf``."""
    return np.array([math.log(1.0 - p_rf), math.log(p_rf)], dtype=np.float32)


def _flags_over(probabilities: list[float], threshold: float) -> list[float]:
    asked: list[float] = []
    guard = TurnGuard(
        rf_id=1,
        stop_id=0,
        threshold=threshold,
        flag_sampled=False,
        policy=readme_policy(asked),
        sampling=GREEDY,
        rng=random.Random(0),
        cancel=threading.Event(),
    )
    for position, p in enumerate(probabilities):
        scores = _scores(p)
        guard(np.zeros(position + 1, dtype=np.intc), scores)
        if guard.stop_reason:
            break
    assert [f.probability for f in guard.take_flags()] == pytest.approx(asked)
    return asked


def test_the_issues_sequence_is_asked_at_its_start_and_its_peak():
    asked = _flags_over([0.1, 0.68, 0.89, 0.79, 0.39, 0.2], threshold=0.3)
    assert asked == pytest.approx([0.68, 0.89], abs=1e-6)  # 0.89 halts; the turn ends there


def test_a_step_below_the_threshold_ends_the_run():
    # continue at 0.5; 0.6 rises (asked); 0.55 does not; 0.1 ends the run; 0.5 starts a new one
    asked = _flags_over([0.5, 0.6, 0.55, 0.1, 0.5, 0.5, 0.7], threshold=0.3)
    assert asked == pytest.approx([0.5, 0.6, 0.5, 0.7], abs=1e-6)
