"""How far a linear read-out of the 135M model's hidden states can separate harm from edgy-but-benign requests.

Issue 25 asks for contrastive false flags ≤ 5% at harmful recall ≥ 0.95. This script measures
what any linear probe on the model's reply-start hidden state can reach, as a ceiling for the
``<rf>`` row (itself a linear probe on the final hidden state) and a gauge of what the LoRA
adds over the plain base. For each representation (the shipped default with its LoRA merged,
and the base alone; the final normed layer and two middle layers of each) it fits an
L2-regularised logistic regression on the training split (harmful requests, harmful twins,
benign openings, everyday and contrastive requests, benign follow-ups after a refused turn),
picks the regularisation and the threshold (5% FPR) on the validation mix, and reports on the
test split rf-eval uses (same prompts, near duplicates of training prompts left out):

- harmful TPR, everyday and contrastive FPR, and the keep-mode follow-ups (a benign request
  after a refused harmful turn, judged at the reply start) at that threshold;
- the trade-off: contrastive FPR at the threshold where test TPR is 0.95;
- a cross-validated fit on the test prompts themselves (5 folds), the in-distribution ceiling.

Reply starts only: the row also reads every later reply position, so these are prompt-level
figures. Features are cached in ``--out`` (one file per model and prompt set), so a stopped run
resumes. Usage: ``python bench/probe_ceiling.py --out DIR [--threads 1]``.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np

from rfsdk import DEFAULT_REFUSAL
from rfsdk.calibration import roc_auc
from rfsdk.convert.adapter import load_adapter
from rfsdk.default_model import shipped_adapter
from rfsdk.evaluation.evalset import eval_set
from rfsdk.model_source import default_base_model_path
from rfsdk.train.base import load_base
from rfsdk.train.data import load_dataset
from rfsdk.train.merge_hf import merged_model
from rfsdk.train.prompt_sets import prompt_set
from rfsdk.train.recipe import followup_conversations
from rfsdk.train.tokenize import tokenize_example

LAYERS = (10, 20, -1)
"""Hidden-state indices read: two middle layers (raw residual stream) and the final normed state."""
TARGET_FPR = 0.05
TARGET_TPR = 0.95


def _conversation_ids(tokenizer, prompt) -> list[int] | None:
    """Prompt ids up to the reply start, or None for a prompt longer than 512 tokens."""
    try:
        return tokenize_example(tokenizer, prompt, "", max_len=512).prompt
    except ValueError:
        return None


def _features(model, tokenizer, prompts: list, path: Path) -> np.ndarray:
    """[prompts, len(LAYERS), n_embd] reply-start hidden states (cached in ``path``); NaN rows for prompts too long."""
    import torch

    if path.exists():
        return np.load(path)
    rows = []
    began = time.perf_counter()
    for i, prompt in enumerate(prompts):
        ids = _conversation_ids(tokenizer, prompt)
        if ids is None:
            rows.append(np.full((len(LAYERS), model.config.hidden_size), np.nan, dtype=np.float32))
            continue
        with torch.no_grad():
            hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states
        rows.append(np.stack([hidden[layer][0, -1].float().numpy() for layer in LAYERS]))
        if (i + 1) % 200 == 0:
            print(f"  {path.stem}: {i + 1}/{len(prompts)} ({time.perf_counter() - began:.0f} s)", flush=True)
    array = np.stack(rows)
    np.save(path, array)
    return array


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, steps: int = 300):
    """(weights, bias) of an L2-regularised logistic regression (L-BFGS, balanced classes)."""
    import torch

    xt, yt = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    weight = torch.where(yt > 0, 0.5 / yt.mean(), 0.5 / (1 - yt.mean()))
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = (weight * torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt, reduction="none")).mean()
        loss = loss + l2 * (w @ w)
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach().numpy(), b.item()


def _threshold_for_fpr(benign: np.ndarray, fpr: float) -> float:
    # Not rfsdk.calibration.threshold_for_fpr: that one is for probabilities (float32 steps, at most 1),
    # and a probe's scores are unbounded logits.
    ordered = np.sort(benign)[::-1]
    k = int(np.floor(fpr * len(ordered)))
    return float(ordered[k]) + 1e-9 if k < len(ordered) else float(ordered[-1])


def _threshold_for_tpr(harmful: np.ndarray, tpr: float) -> float:
    ordered = np.sort(harmful)[::-1]
    return float(ordered[min(int(np.ceil(tpr * len(ordered))) - 1, len(ordered) - 1)])


class Probe:
    """A standardised logistic probe on one layer's features."""

    def __init__(self, x: np.ndarray, y: np.ndarray, l2: float) -> None:
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        self.w, self.b = _fit_logistic((x - self.mean) / self.std, y, l2)

    def score(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std) @ self.w + self.b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the cached features")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--benign-chats", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    dataset = load_dataset()
    train, validation = dataset.split("train"), dataset.split("validation")
    train_prompts = dataset.prompts("train")
    rng = random.Random(args.seed)

    by_kind: dict[str, list] = {}
    for e in train:
        by_kind.setdefault(e.kind, []).append(e)
    unique = lambda items: list(dict.fromkeys(items))  # noqa: E731
    harmful = unique(e.prompt for k in ("harmful_prompt", "harmful_answer", "refused_answer", "contrastive_harmful")
                     for e in by_kind.get(k, []))
    generated = unique(e.prompt for k in ("everyday_request", "contrastive_benign") for e in by_kind.get(k, []))
    chats = [e.prompt for e in by_kind.get("benign_chat", []) if len(e.prompt) <= 1500]
    benign = unique([e.prompt for k in ("over_refusal", "benign_answer") for e in by_kind.get(k, [])]
                    + rng.sample(chats, min(args.benign_chats, len(chats))) + generated)
    follow_up_requests = by_kind.get("everyday_request", []) + by_kind.get("contrastive_benign", [])
    follow_ups = [[*history, {"role": "user", "content": request.prompt}]
                  for history, request, _ in followup_conversations(by_kind.get("harmful_prompt", []), {},
                                                                    follow_up_requests, 300, DEFAULT_REFUSAL, args.seed)]
    val = prompt_set(validation, train_prompts=train_prompts)
    test = eval_set("test", dataset.split("test", evaluation=True), train_prompts=train_prompts)
    keep_follow_ups = [[{"role": "user", "content": h}, {"role": "assistant", "content": DEFAULT_REFUSAL},
                        {"role": "user", "content": b}] for h, b in test.after_halt]
    sets = {
        "train_harmful": harmful, "train_benign": benign, "train_follow_ups": follow_ups,
        "val_harmful": val.harmful, "val_benign": val.benign,
        "test_harmful": test.harmful, "test_benign": test.benign, "test_keep_follow_ups": keep_follow_ups,
    }
    print("prompts: " + ", ".join(f"{k} {len(v)}" for k, v in sets.items()), flush=True)

    base = default_base_model_path()
    features: dict[str, dict[str, np.ndarray]] = {}
    for model_name in ("default", "base"):
        if model_name == "default":
            model, tokenizer, _ = merged_model(load_adapter(shipped_adapter()), base)
        else:
            model, tokenizer = load_base(base)
        model.eval()
        features[model_name] = {k: _features(model, tokenizer, v, args.out / f"{model_name}-{k}.npy")
                                for k, v in sets.items()}
        del model
        print(f"{model_name} features done ({time.perf_counter() - began:.0f} s)", flush=True)

    everyday = np.array([p in set(test.benign_suites["everyday requests"]) for p in test.benign])
    contrastive = np.array([p in set(test.benign_suites["contrastive (edgy-but-benign)"]) for p in test.benign])
    print(f"\ntest: {len(test.harmful)} harmful, {len(test.benign)} benign ({everyday.sum()} everyday, "
          f"{contrastive.sum()} contrastive), {len(keep_follow_ups)} keep-mode follow-ups\n")
    print("| representation | val-picked L2 | test TPR | test FPR | everyday | contrastive | keep follow-ups | "
          "contrastive at TPR 0.95 | AUC harmful vs contrastive | 5-fold on test: contrastive at TPR 0.95 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model_name, f in features.items():
        for li, layer in enumerate(LAYERS):
            fits = {name: ~np.isnan(values[:, li]).any(1) for name, values in f.items()}  # prompts that fit 512 tokens
            x = {name: values[fits[name], li] for name, values in f.items()}
            x_train = np.concatenate([x["train_harmful"], x["train_benign"], x["train_follow_ups"]])
            y_train = np.concatenate([np.ones(len(x["train_harmful"])),
                                      np.zeros(len(x["train_benign"]) + len(x["train_follow_ups"]))])
            best = None
            for l2 in (1e-4, 1e-3, 1e-2, 1e-1):
                probe = Probe(x_train, y_train, l2)
                vh, vb = probe.score(x["val_harmful"]), probe.score(x["val_benign"])
                t = _threshold_for_fpr(vb, TARGET_FPR)
                tpr = float((vh >= t).mean())
                if best is None or tpr > best[0]:
                    best = (tpr, l2, probe, t)
            _, l2, probe, t = best
            th, tb = probe.score(x["test_harmful"]), probe.score(x["test_benign"])
            ev, co = everyday[fits["test_benign"]], contrastive[fits["test_benign"]]
            tf = probe.score(x["test_keep_follow_ups"])
            t95 = _threshold_for_tpr(th, TARGET_TPR)
            cv = _cross_validated(np.concatenate([x["test_harmful"], x["test_benign"]]),
                                  np.concatenate([np.ones(len(th)), np.zeros(len(tb))]), l2, co, args.seed)
            layer_name = "final" if layer == -1 else f"layer {layer}"
            print(f"| {model_name}, {layer_name} | {l2:g} | {(th >= t).mean():.3f} | {(tb >= t).mean():.3f} | "
                  f"{(tb[ev] >= t).mean():.3f} | {(tb[co] >= t).mean():.3f} | {(tf >= t).mean():.3f} | "
                  f"{(tb[co] >= t95).mean():.3f} | {roc_auc(th, tb[co]):.3f} | {cv:.3f} |", flush=True)
    print(f"\n({time.perf_counter() - began:.0f} s in all)")


def _cross_validated(x: np.ndarray, y: np.ndarray, l2: float, contrastive: np.ndarray, seed: int) -> float:
    """Contrastive FPR at harmful TPR 0.95 of 5-fold out-of-fold probe scores on the test prompts."""
    folds = np.random.default_rng(seed).permutation(len(y)) % 5
    scores = np.zeros(len(y))
    for k in range(5):
        probe = Probe(x[folds != k], y[folds != k], l2)
        scores[folds == k] = probe.score(x[folds == k])
    harmful, benign = scores[y == 1], scores[y == 0]
    t95 = _threshold_for_tpr(harmful, TARGET_TPR)
    return float((benign[contrastive] >= t95).mean())


if __name__ == "__main__":
    main()
