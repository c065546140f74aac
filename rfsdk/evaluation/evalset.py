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
) -> EvalSet:
    """Prompts of ``examples`` (one split), benign (prompt, answer) pairs, and benign multi-turn chats.

    A chat keeps its first ``turns_per_chat`` user turns; only chats with at least two
    user turns count, so every one is a real multi-turn conversation. ``max_prompts``
    caps the harmful and the benign prompt lists each (for quick runs). Prompts that nearly
    duplicate one of ``train_prompts`` are left out (see `prompt_set`).
    """
    prompts = prompt_set(
        examples, max_chars=max_chars, seed=seed, train_prompts=train_prompts, near_duplicate=near_duplicate
    )
    conversations = []
    for e in examples:
        users = [t.content for t in e.turns or () if t.role == "user" and len(t.content) <= max_chars // 3]
        if e.kind == "benign_chat" and len(users) >= 2:
            conversations.append(users[:turns_per_chat])
    rng = random.Random(seed)
    pairs = _shuffled_pairs(examples, max_chars, rng)
    return EvalSet(
        split=split,
        harmful=prompts.harmful[:max_prompts],
        benign=prompts.benign[:max_prompts],
        edgy=prompts.edgy,
        near_duplicates_left_out=prompts.near_duplicates_left_out,
        benign_pairs=pairs,
        conversations=rng.sample(conversations, min(chats, len(conversations))),
    )


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
