"""The evaluation report: one JSON file, a Markdown summary and ROC/PR plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..calibration import DetectionMetrics
from .attacks import AttackResult, PromptDetection
from .suites import SuiteResult
from .utility import Utility


class EvalReport(BaseModel):
    """Everything rf-eval measured for one model."""

    model_config = ConfigDict(frozen=True)

    model: str
    split: str
    prompt_detection: PromptDetection
    suites: list[SuiteResult] = []
    comparisons: list[tuple[str, DetectionMetrics]] = []
    attacks: list[AttackResult]
    utility: Utility | None = None
    notes: list[str] = []

    def to_markdown(self) -> str:
        """A short human-readable summary."""
        d = self.prompt_detection
        lines = [
            f"# rf-eval: {self.model}",
            "",
            f"Split: {self.split}; {d.at_model_threshold.n_harmful} harmful and "
            f"{d.at_model_threshold.n_benign} benign prompts.",
            "",
            "## Prompt-level detection (P(<rf>) at the first reply position)",
            "",
            "| threshold | TPR | FPR | precision | F1 | ROC-AUC |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for label, m in (("model's", d.at_model_threshold), (f"for FPR ≤ {d.target_fpr:g}", d.calibrated)):
            lines.append(
                f"| {label} {m.threshold:.4g} | {m.tpr:.3f} | {m.fpr:.3f} | {m.precision:.3f} | {m.f1:.3f} | {m.roc_auc:.3f} |"
            )
        if self.suites:
            lines += ["", "## Suites at the model's threshold", "",
                      "| suite | label | n | flagged | ROC-AUC |", "|---|---|---:|---:|---:|"]
            lines += [f"| {r.name} | {r.label} | {r.n} | {r.flagged:.3f} | {r.roc_auc:.3f} |" for r in self.suites]
            for r in self.suites:
                if r.examples:
                    what = "flagged (highest P(<rf>) first)" if r.label == "benign" else "missed (lowest P(<rf>) first)"
                    lines += ["", f"{r.name}, {what}:", ""]
                    lines += [f"- {s:.3f} {_one_line(p)}" for p, s in r.examples]
        if self.comparisons:
            lines += ["", "## <rf> and a classifier on the same prompts", "",
                      "| detector | threshold | TPR | FPR | F1 | ROC-AUC |", "|---|---:|---:|---:|---:|---:|"]
            lines += [
                f"| {name} | {m.threshold:.4g} | {m.tpr:.3f} | {m.fpr:.3f} | {m.f1:.3f} | {m.roc_auc:.3f} |"
                for name, m in self.comparisons
            ]
        lines += ["", "## Attacks and false flags", "", "| measure | rate | n | how |", "|---|---:|---:|---|"]
        lines += [f"| {a.name} | {a.rate:.3f} | {a.n} | {a.detail} |" for a in self.attacks]
        if self.utility is not None:
            u = self.utility
            lines += [
                "",
                "## Utility",
                "",
                f"- mean KL(base ‖ guarded): {u.kl_nats_per_token:.4f} nats/token over {u.answer_tokens} answer tokens",
            ]
            if u.top1_agreement is not None:
                lines.append(f"- same most likely token as the base on those answer tokens: {u.top1_agreement:.1%}")
            lines.append(
                f"- identical greedy openings ({u.opening_tokens} tokens): {u.identical_openings:.1%} of {u.prompts} prompts"
            )
            if u.rounding is not None:
                rounding = u.rounding
                lines.append(
                    "- for reference, rounding alone (the base against itself with an f32 instead of an f16 KV cache): "
                    f"KL {rounding.kl_nats_per_token:.4f}, same most likely token {rounding.top1_agreement:.1%}, "
                    f"identical greedy openings {rounding.identical_openings:.1%}"
                )
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def write(self, folder: Path) -> list[Path]:
        """Write report.json, report.md and (if matplotlib is installed) roc.png and pr.png."""
        folder.mkdir(parents=True, exist_ok=True)
        report = self
        try:
            plots = _plots(self.prompt_detection, self.suites, folder)
        except ImportError:
            plots = []
            note = "plots skipped: install matplotlib for roc.png and pr.png"
            report = self.model_copy(update={"notes": [*self.notes, note]})
        (folder / "report.json").write_text(json.dumps(report.model_dump(mode="json"), indent=1), encoding="utf-8")
        (folder / "report.md").write_text(report.to_markdown(), encoding="utf-8")
        return [folder / "report.json", folder / "report.md", *plots]


def _one_line(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def curves(harmful: list[float], benign: list[float]) -> dict[str, np.ndarray]:
    """ROC (fpr, tpr) and precision-recall points over every distinct threshold."""
    h = np.asarray(harmful, dtype=np.float64)
    b = np.asarray(benign, dtype=np.float64)
    thresholds = np.unique(np.concatenate([h, b, [np.inf]]))[::-1]
    tp = np.array([(h >= t).sum() for t in thresholds], dtype=np.float64)
    fp = np.array([(b >= t).sum() for t in thresholds], dtype=np.float64)
    recall = tp / max(h.size, 1)
    precision = np.divide(tp, tp + fp, out=np.ones_like(tp), where=(tp + fp) > 0)
    return {"fpr": fp / max(b.size, 1), "tpr": recall, "precision": precision, "recall": recall}


def _plots(detection: PromptDetection, suites: list[SuiteResult], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [("all benign", curves(detection.harmful_scores, detection.benign_scores))] + [
        (s.name, curves(detection.harmful_scores, s.scores)) for s in suites if s.label == "benign"
    ]
    paths = []
    for name, x, y, xlabel, ylabel in (
        ("roc.png", "fpr", "tpr", "false-positive rate (benign flagged)", "true-positive rate (harmful flagged)"),
        ("pr.png", "recall", "precision", "recall", "precision"),
    ):
        fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=100)
        for label, c in lines:
            ax.plot(c[x], c[y], drawstyle="steps-post", label=label)
        ax.legend(fontsize=7, title="harmful against", title_fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"prompt-level detection, AUC {detection.calibrated.roc_auc:.3f}" if name == "roc.png" else "precision-recall")
        fig.tight_layout()
        fig.savefig(folder / name)
        plt.close(fig)
        paths.append(folder / name)
    return paths
