"""Re-fit the <rf> output row of a tuned adapter to the rule the guard applies.

Training teaches the row at full LoRA strength; ``rf-train tune`` then weakens the LoRA for
utility, and the row no longer matches the hidden states it meets. The guard flags a reply
when P(<rf>) reaches one threshold at the reply start or at any later step. So this step
fits the row again, as a logistic classifier on the tuned model's final hidden states (the
logit of <rf> against the log-sum-exp of all other logits, exactly as the model computes
P(<rf>)), with two terms: the reply start of harmful against benign prompts, and a soft
maximum over each reply, harmful answers' first ``HARMFUL_SPAN`` tokens against benign
answers. The benign side includes the tuned model's own replies (on-policy, generated with
llama.cpp): without them the row learns to tell the model's own text from human text, and
flags most of the model's benign replies. An L2 pull keeps the row near where training
left it. Only the row changes (with tied embeddings it is also the input row); the LoRA
and the model's ordinary text stay as they are. The threshold is calibrated again.
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from rfsdk.convert.adapter import file_sha256, load_adapter, save_adapter
from rfsdk.convert.keys import RF_TOKEN
from rfsdk.convert.patch import patch_gguf
from rfsdk.errors import ConversionError
from rfsdk.model_source import cache_dir

from .base import check_trained_on
from .calibrate import Calibration, calibrate
from .data_schema import Example
from .llama_settings import llama_settings
from .loop import TokenizedExample
from .prompt_sets import PromptSet
from .recipe import RecipeConfig, build_training_set

HARMFUL_SPAN = 32  # the prefilling attack is judged on the first 32 reply tokens
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ReplyFeatures:
    """Final hidden states of a set of replies: at the reply start, and at every later position."""

    start_h: np.ndarray  # [replies, n_embd]
    start_z: np.ndarray  # [replies] log-sum-exp of the logits other than <rf>
    reply_h: np.ndarray  # [positions, n_embd]
    reply_z: np.ndarray  # [positions]
    reply_of: np.ndarray  # [positions] the reply each position belongs to


class RowFit(BaseModel):
    """What ``refit_row`` did, and the calibration at the new row."""

    model_config = ConfigDict(frozen=True)

    pull: float
    harmful_replies: int
    benign_replies: int
    onpolicy_benign_replies: int
    row_change: float
    row_norm_before: float
    seconds: float
    calibration: Calibration


def reply_features(model, examples: Sequence[TokenizedExample], rf_id: int, row: np.ndarray, *, span: int | None,
                   progress: Progress | None = None, label: str = "features") -> ReplyFeatures:
    """Hidden states and other-logit log-sum-exps of ``examples`` (answers cut to ``span`` tokens when given).

    Checks that the model's <rf> logit is its final hidden state times ``row``; an
    architecture that scales or caps its logits cannot be re-fitted this way.
    """
    import torch

    start_h, start_z, reply_h, reply_z, reply_of = [], [], [], [], []
    for index, example in enumerate(examples):
        answer = example.answer[: span] if span is not None else example.answer
        ids = torch.tensor([example.prompt + answer])
        with torch.no_grad():
            out = model(ids, output_hidden_states=True)
        first, positions = len(example.prompt) - 1, max(len(answer), 1)
        h = out.hidden_states[-1][0, first : first + positions].double()
        logits = out.logits[0, first : first + positions].double()
        rf_logit = logits[:, rf_id].clone()
        if not torch.allclose(h @ torch.tensor(row, dtype=torch.float64), rf_logit, atol=1e-3, rtol=1e-3):
            raise ConversionError(
                "the model's <rf> logit is not its final hidden state times the <rf> row (a logit scale or cap?); "
                "rf-train refit-row supports plain linear output heads only."
            )
        logits[:, rf_id] = -torch.inf
        z = torch.logsumexp(logits, dim=-1)
        start_h.append(h[0].numpy())
        start_z.append(float(z[0]))
        reply_h.append(h[1:].numpy())
        reply_z.append(z[1:].numpy())
        reply_of.append(np.full(len(h) - 1, index))
        if progress is not None:
            progress(label, index + 1, len(examples))
    return ReplyFeatures(
        np.stack(start_h), np.array(start_z), np.concatenate(reply_h), np.concatenate(reply_z), np.concatenate(reply_of)
    )


def onpolicy_replies(model: Path, prompts: Sequence[list[int]], *, max_tokens: int, seed: int,
                     n_threads: int | None, progress: Progress | None = None) -> list[TokenizedExample]:
    """The model's own replies to ``prompts`` (token ids), <rf> never sampled; every second one greedy, the rest at 0.8.

    GPU offload follows the :func:`~rfsdk.train.llama_settings.llama_settings` in force.
    """
    import llama_cpp

    llm = llama_cpp.Llama(str(model), n_ctx=max(len(p) for p in prompts) + max_tokens + 1, n_threads=n_threads,
                          n_gpu_layers=llama_settings().n_gpu_layers, seed=seed, verbose=False)
    rf_id = int(llm.metadata[RF_TOKEN])

    def without_rf(_ids, logits):
        logits[rf_id] = -np.inf
        return logits

    replies = []
    for index, prompt in enumerate(prompts):
        answer: list[int] = []
        greedy = index % 2 == 0
        for token in llm.generate(prompt, temp=0.0 if greedy else 0.8, top_k=40, top_p=0.95, reset=True,
                                  logits_processor=llama_cpp.LogitsProcessorList([without_rf])):
            if token == llm.token_eos() or len(answer) >= max_tokens:
                break
            answer.append(token)
        replies.append(TokenizedExample(prompt=list(prompt), answer=answer))
        if progress is not None:
            progress("on-policy benign replies", index + 1, len(prompts))
    llm.close()
    return replies


def cached_onpolicy_replies(cache: Path, model_sha256: str, model: Path, prompts: Sequence[list[int]], *, max_tokens: int,
                            seed: int, n_threads: int | None, progress: Progress | None = None) -> list[TokenizedExample]:
    """``onpolicy_replies``, kept in ``cache`` (JSON lines) under ``model_sha256``, the prompts and settings, and read back next time."""
    key = hashlib.sha256(json.dumps([model_sha256, list(map(list, prompts)), max_tokens, seed]).encode()).hexdigest()
    if cache.is_file():
        for line in cache.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record["key"] == key:
                return [TokenizedExample(prompt=list(p), answer=a) for p, a in zip(prompts, record["answers"])]
    replies = onpolicy_replies(model, prompts, max_tokens=max_tokens, seed=seed, n_threads=n_threads, progress=progress)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with cache.open("a", encoding="utf-8") as out:
        out.write(json.dumps({"key": key, "answers": [r.answer for r in replies]}) + "\n")
    return replies


def fit_row(row: np.ndarray, harmful: ReplyFeatures, benign: Sequence[ReplyFeatures], *, pull: float) -> np.ndarray:
    """The row that best tells ``harmful`` from each ``benign`` set (weighted alike) at the start and over the reply."""
    import torch

    def tensors(f: ReplyFeatures) -> dict:
        return {k: torch.tensor(v) for k, v in vars(f).items()}

    bce = torch.nn.functional.binary_cross_entropy_with_logits
    sets = [(tensors(harmful), 1.0, 1.0)] + [(tensors(f), 0.0, 1.0 / len(benign)) for f in benign]
    start = torch.tensor(row, dtype=torch.float64)
    w = start.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([w], max_iter=300, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        total = pull * ((w - start) ** 2).sum()
        for t, label, weight in sets:
            at_start = t["start_h"] @ w - t["start_z"]
            total = total + weight * bce(at_start, torch.full_like(at_start, label))
            if len(t["reply_of"]):
                over_reply = soft_max_per_reply(t["reply_h"] @ w - t["reply_z"], t["reply_of"], len(at_start))
                over_reply = over_reply[torch.bincount(t["reply_of"], minlength=len(at_start)) > 0]  # replies with no answer tokens
                total = total + weight * bce(over_reply, torch.full_like(over_reply, label))
        total.backward()
        return total

    optimizer.step(loss)
    return w.detach().numpy()


def soft_max_per_reply(logits, reply_of, n_replies: int):
    """Log-sum-exp of each reply's logits (a reply with no positions gets about -1e4)."""
    import torch

    peak = torch.full((n_replies,), -1e4, dtype=logits.dtype).scatter_reduce(0, reply_of, logits.detach(), "amax")
    total = torch.zeros(n_replies, dtype=logits.dtype).index_add(0, reply_of, torch.exp(logits - peak[reply_of]))
    return peak + torch.log(total + 1e-30)


def refit_row(
    adapter: Path,
    base: Path,
    out: Path,
    *,
    train_examples: Sequence[Example],
    recipe: RecipeConfig,
    prompts: PromptSet,
    examples: int = 700,
    onpolicy: int = 500,
    onpolicy_tokens: int = 96,
    pull: float = 0.1,
    target_fpr: float = 0.05,
    seed: int = 0,
    n_threads: int | None = None,
    progress: Progress | None = None,
) -> RowFit:
    """Write ``out``: ``adapter`` with its <rf> output row re-fitted and its threshold calibrated on ``prompts``.

    The training set is built from ``train_examples`` as ``rf-train fit`` builds it with
    ``recipe`` (its cached on-policy answers reused); ``examples`` harmful and benign
    examples are drawn, and ``onpolicy`` further benign prompts get the tuned model's own
    replies. ``base`` is the GGUF the adapter was trained on. Writes
    ``out.with_suffix(".refit.json")`` too.
    """
    from .merge_hf import merged_model

    began = time.perf_counter()
    rf = load_adapter(adapter)
    base_sha256 = file_sha256(base)
    check_trained_on(adapter, rf, base, base_sha256)
    tied = rf.output is None
    row = np.asarray(rf.embedding if tied else rf.output, dtype=np.float64)
    model, tokenizer, rf_id = merged_model(rf, base)
    data = build_training_set(train_examples, tokenizer, recipe, onpolicy_model=base,
                              cache_dir=cache_dir() / "onpolicy" / base.stem, progress=progress, n_threads=n_threads)
    rng = random.Random(seed)
    drawn_harmful = rng.sample(data.harmful, min(examples, len(data.harmful)))
    drawn_benign = rng.sample(data.benign, min(examples + onpolicy, len(data.benign)))
    drawn_benign, onpolicy_prompts = drawn_benign[:examples], [e.prompt for e in drawn_benign[examples:]]
    if not drawn_harmful or not drawn_benign:
        raise ConversionError("refit-row needs harmful and benign training examples; the training set has none of one kind.")
    with tempfile.TemporaryDirectory(prefix=".rf-refit-", dir=out.resolve().parent) as folder:
        gguf = Path(folder) / "model.gguf"
        patch_gguf(base, adapter, gguf)
        own = cached_onpolicy_replies(
            cache_dir() / "refit" / f"onpolicy-benign-{base.stem}.jsonl", rf.sha256 + base_sha256, gguf, onpolicy_prompts,
            max_tokens=onpolicy_tokens, seed=seed, n_threads=n_threads, progress=progress,
        ) if onpolicy_prompts else []
        features = [
            reply_features(model, drawn, rf_id, row, span=span, progress=progress, label=label)
            for drawn, span, label in ((drawn_harmful, HARMFUL_SPAN, "harmful features"), (drawn_benign, None, "benign features"),
                                       (own, None, "on-policy features"))
            if drawn
        ]
        del model
        new_row = fit_row(row, features[0], features[1:], pull=pull).astype(np.float32)
        staged = Path(folder) / "adapter.safetensors"
        embedding, output = (new_row, None) if tied else (rf.embedding, new_row)
        save_adapter(staged, rf.metadata, embedding, output, rf.loras)
        gguf.unlink()
        patch_gguf(base, staged, gguf)
        calibration = calibrate(gguf, prompts, target_fpr=target_fpr, n_threads=n_threads, progress=progress)
    metadata = rf.metadata.model_copy(update={"rf_threshold": calibration.threshold})
    save_adapter(out, metadata, embedding, output, rf.loras)
    result = RowFit(
        pull=pull, harmful_replies=len(drawn_harmful), benign_replies=len(drawn_benign), onpolicy_benign_replies=len(own),
        row_change=float(np.linalg.norm(new_row - row)), row_norm_before=float(np.linalg.norm(row)),
        seconds=round(time.perf_counter() - began, 1), calibration=calibration,
    )
    out.with_suffix(".refit.json").write_text(result.model_dump_json(indent=1) + "\n", encoding="utf-8")
    return result
