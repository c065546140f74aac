"""How the type of LoRA-merged tensors changes the assembled default model.

`python bench/merge_precision.py [--strength S] [--pairs N] [--prompts N]` assembles the bundled
adapter onto SmolLM2-135M-Instruct.Q4_1.gguf with each `rf-convert patch --merged-type`
(base = Q4_1, auto = Q8_0, F16), and beside them the exact LoRA: the base plus <rf> with the
LoRA applied by llama.cpp at run time (`Llama(lora_path=...)`, float arithmetic). For each it
prints the file size, greedy decode tokens/s, mean KL(base || model) and KL(exact || model) per
token on benign validation answers, and the prompt-level ROC-AUC of P(<rf>) on validation
prompts. `--strength` overrides the adapter's LoRA strength (1 = the delta as trained).
Needs the train extra's dataset packages (`rf-train data`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import llama_cpp
import numpy as np

from rfsdk import GuardedChat
from rfsdk.calibration import roc_auc
from rfsdk.convert.adapter import load_adapter, save_adapter
from rfsdk.convert.lora_gguf import lora_to_gguf
from rfsdk.convert.patch import patch_gguf
from rfsdk.default_model import shipped_adapter
from rfsdk.evaluation.attacks import prompt_scores
from rfsdk.evaluation.evalset import eval_set
from rfsdk.evaluation.utility import answer_logprobs
from rfsdk.events import Message
from rfsdk.model_source import default_base_model_path
from rfsdk._prompt import PromptBuilder
from rfsdk.train.data import load_dataset

THREADS = 2


def _llama(path: Path, lora: Path | None = None) -> llama_cpp.Llama:
    extra = {"lora_path": str(lora)} if lora else {}
    return llama_cpp.Llama(str(path), n_ctx=2048, logits_all=True, verbose=False, n_threads=THREADS, **extra)


def _kl(p: list[np.ndarray], q: list[np.ndarray]) -> float:
    return sum(float((np.exp(a) * (a - b)).sum()) for a, b in zip(p, q)) / sum(len(a) for a in p)


def _tokens_per_second(llm: llama_cpp.Llama) -> float:
    best = 0.0
    for _ in range(3):
        llm.reset()
        started = time.perf_counter()
        out = llm.create_completion("Write a long story about a baker who", max_tokens=128, temperature=0, top_k=1)
        best = max(best, out["usage"]["completion_tokens"] / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strength", type=float, help="LoRA strength to assemble (default: the adapter's own).")
    parser.add_argument("--pairs", type=int, default=30, help="Benign validation answers for the KL figures.")
    parser.add_argument("--prompts", type=int, default=100, help="Harmful and benign validation prompts each, for ROC-AUC.")
    args = parser.parse_args()

    base = default_base_model_path()
    data = eval_set("validation", load_dataset().split("validation"))
    pairs = data.benign_pairs[: args.pairs]
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        rf = load_adapter(shipped_adapter())
        strength = rf.metadata.lora_strength if args.strength is None else args.strength
        adapter = work / "adapter.safetensors"
        save_adapter(adapter, rf.metadata.model_copy(update={"lora_strength": strength}), rf.embedding, rf.output, rf.loras)
        variants: dict[str, tuple[Path, Path | None]] = {}
        for merged_type in ("base", "auto", "F16"):
            out = work / f"{merged_type}.gguf"
            report = patch_gguf(base, adapter, out, merged_type=merged_type)  # type: ignore[arg-type]
            stored = {c.to_type for c in report.changes if c.action == "LoRA merged"}
            variants[f"merged, --merged-type {merged_type} ({'/'.join(sorted(stored))})"] = (out, None)
        lora_to_gguf(adapter, work / "lora.gguf", base=base, rf_base=work / "rf-base.gguf")
        variants["exact: rf-base + Llama(lora_path=...)"] = (work / "rf-base.gguf", work / "lora.gguf")

        base_llm = _llama(base)
        n_vocab = base_llm.n_vocab()
        builder = PromptBuilder(base_llm, base_llm.metadata["tokenizer.chat_template"])
        prompts = [builder.build([Message(role="user", content=p)]) for p, _ in pairs]
        answers = [base_llm.tokenize(a.encode(), add_bos=False, special=False)[: 2048 - len(p)] for p, (_, a) in zip(prompts, pairs)]
        reference = {"base": [answer_logprobs(base_llm, p, a, n_vocab) for p, a in zip(prompts, answers)]}
        rows = []
        for name, (path, lora) in reversed(variants.items()):  # the exact model first: it is the reference
            llm = _llama(path, lora)
            logprobs = [answer_logprobs(llm, p, a, n_vocab) for p, a in zip(prompts, answers)]
            reference.setdefault("exact", logprobs)
            chat = GuardedChat(llm)
            auc = roc_auc(prompt_scores(chat, data.harmful[: args.prompts]), prompt_scores(chat, data.benign[: args.prompts]))
            size = path.stat().st_size + (lora.stat().st_size if lora else 0)
            rows.append(
                f"| {name} | {size / 1e6:.0f} | {_tokens_per_second(llm):.1f} | {_kl(reference['base'], logprobs):.4f} "
                f"| {_kl(reference['exact'], logprobs):.4f} | {auc:.3f} |"
            )
    print(f"LoRA strength {strength:g}; {len(pairs)} benign validation answers ({sum(map(len, answers))} tokens); "
          f"{args.prompts} + {args.prompts} validation prompts; {THREADS} threads\n")
    print("| model | MB | decode tok/s | KL(base ‖ model) | KL(exact ‖ model) | prompt ROC-AUC |")
    print("|---|---:|---:|---:|---:|---:|")
    print("\n".join(reversed(rows)))


if __name__ == "__main__":
    main()
