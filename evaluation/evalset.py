"""The evaluation set of one split of the project dataset: prompts, answers and chats."""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..train.data_schema import Example
from ..train.prompt_sets import NEAR_DUPLICATE_SHARE, prompt_set
from .run import EvalSet


def eval_set(
    split: str,
    examples: Sequence[Example],
    *,
    chats: int = 40,
    turns_per_chat: int = 3,
    max_chars: int = 1500,
    max_prompts: int | None = None,
    seed: int = 0,
    train_prompts: Sequence[str] = (),
    near_duplicate: float = NEAR_DUPLICATE_SHARE,
    followups: int = 100,
) -> EvalSet:
    """Prompts of ``examples`` (one split), benign (prompt, answer) pairs, and benign multi-turn chats.

    A chat keeps its first ``turns_per_chat`` user turns; only chats with at least two
    user turns count, so every one is a real multi-turn conversation. ``max_prompts``
    caps the harmful and the benign prompt lists each (a seeded sample across all sources,
    for quick runs). Prompts that nearly duplicate one of ``train_prompts`` are left out
    (see `prompt_set`). ``followups`` conversations of each kind pair a harmful request with
    a benign (everyday or contrastive) follow-up, and a benign request with a harmful one.
    """
    prompts = prompt_set(
        examples, max_chars=max_chars, seed=seed, train_prompts=train_prompts, near_duplicate=near_duplicate
    )
    rng = random.Random(seed)
    harmful = _sample(prompts.harmful, max_prompts, rng)
    benign = _sample(prompts.benign, max_prompts, rng)
    kept = set(harmful) | set(benign)
    short_benign = prompts.everyday + prompts.contrastive
    followup_rng = random.Random(seed + 1)
    conversations = []
    for e in examples:
        users = [t.content for t in e.turns or () if t.role == "user" and len(t.content) <= max_chars // 3]
        if e.kind == "benign_chat" and len(users) >= 2:
            conversations.append(users[:turns_per_chat])
    pairs = _shuffled_pairs(examples, max_chars, rng)
    return EvalSet(
        split=split,
        harmful=harmful,
        benign=benign,
        edgy=[p for p in prompts.edgy if p in kept],
        near_duplicates_left_out=prompts.near_duplicates_left_out,
        benign_pairs=pairs,
        conversations=rng.sample(conversations, min(chats, len(conversations))),
        benign_suites={name: [p for p in group if p in kept] for name, group in prompts.benign_suites().items()},
        harmful_suites={"contrastive twins (harmful)": [p for p in prompts.contrastive_harmful if p in kept]},
        after_halt=_pairs(prompts.harmful, short_benign, followups, followup_rng),
        harmful_followups=_pairs(short_benign, prompts.harmful, followups, followup_rng),
    )


def _sample(prompts: list[str], limit: int | None, rng: random.Random) -> list[str]:
    """``prompts`` itself, or a seeded sample of ``limit`` of them in their original order."""
    if limit is None or limit >= len(prompts):
        return list(prompts)
    chosen = set(rng.sample(range(len(prompts)), limit))
    return [p for i, p in enumerate(prompts) if i in chosen]


def _pairs(first: list[str], second: list[str], count: int, rng: random.Random) -> list[tuple[str, str]]:
    """``count`` conversations: a first request and a follow-up, each drawn without repeats while they last."""
    if not first or not second:
        return []
    firsts = [first[i % len(first)] for i in rng.sample(range(max(count, len(first))), count)]
    seconds = [second[i % len(second)] for i in rng.sample(range(max(count, len(second))), count)]
    return list(zip(firsts, seconds))


def benign_answer_pairs(examples: Sequence[Example], *, max_chars: int = 1500, seed: int = 0) -> list[tuple[str, str]]:
    """The benign (prompt, answer) pairs of ``examples`` in the order `eval_set` gives them."""
    return _shuffled_pairs(examples, max_chars, random.Random(seed))


def _shuffled_pairs(examples: Sequence[Example], max_chars: int, rng: random.Random) -> list[tuple[str, str]]:
    pairs = [
        (e.prompt, e.answer)
        for e in examples
        if e.kind in ("benign_answer", "benign_chat") and e.answer and len(e.prompt) + len(e.answer) <= max_chars
    ]
    return rng.sample(pairs, len(pairs))
