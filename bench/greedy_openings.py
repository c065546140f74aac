"""How fragile identical greedy openings are on the default model: weight changes against rounding alone.

`python bench/greedy_openings.py [--prompts N] [--tokens N]` generates greedy replies to benign
validation prompts with SmolLM2-135M-Instruct.Q4_1.gguf, then with variants of it, and prints for
each the share of replies whose first N tokens are identical to the base's, the median position of
the first differing token and the share that differ within 8 tokens. Variants: the base with an
f32 KV cache or a small evaluation batch (arithmetic only, no weight changed); the base plus <rf>
with the LoRA layers re-rounded to Q8_0 and a zero LoRA delta (what `rf-convert patch` does to the
layers it merges, without the delta); the bundled adapter's exact LoRA at a range of scales
(`Llama(lora_path=..., lora_scale=s)`, float arithmetic); and the default model as it ships.
Needs the train extra's dataset packages (`rf-train data`).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
from pathlib import Path

import llama_cpp
import numpy as np

from rfsdk import GuardedChat, SamplingConfig
from rfsdk.convert.adapter import load_adapter, save_adapter
from rfsdk.convert.lora_gguf import lora_to_gguf
from rfsdk.convert.patch import patch_gguf
from rfsdk.default_model import shipped_adapter
from rfsdk.evaluation.evalset import eval_set
from rfsdk.model_source import default_base_model_path
from rfsdk.train.data import load_dataset

THREADS = 2
SCALES = (0.1, 0.25, 0.5, 1.0)
F32_CACHE = {"type_k": llama_cpp.GGML_TYPE_F32, "type_v": llama_cpp.GGML_TYPE_F32}


def _replies(chat: GuardedChat, prompts: list[str]) -> list[list[int]]:
    out = []
    for prompt in prompts:
        chat.reset()
        out.append(chat.llm.tokenize(chat.send(prompt).text.encode(), add_bos=False, special=False))
    return out


def _first_difference(a: list[int], b: list[int], tokens: int) -> int:
    if a == b:
        return tokens
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=60, help="Benign validation prompts.")
    parser.add_argument("--tokens", type=int, default=64, help="Greedy reply tokens compared.")
    args = parser.parse_args()

    base = default_base_model_path()
    dataset = load_dataset()
    data = eval_set("validation", dataset.split("validation", evaluation=True), train_prompts=dataset.prompts("train"))
    prompts = data.benign[: args.prompts]
    greedy = SamplingConfig(temperature=0.0, max_tokens=args.tokens)

    def unguarded(**llama_kwargs) -> GuardedChat:
        return GuardedChat(base, allow_unguarded=True, sampling=greedy, n_threads=THREADS, llama_kwargs=llama_kwargs)

    def guarded(model: Path | llama_cpp.Llama) -> GuardedChat:
        threads = {} if isinstance(model, llama_cpp.Llama) else {"n_threads": THREADS}
        return GuardedChat(model, policy="continue", threshold=1.0, sampling=greedy, **threads)

    reference = _replies(unguarded(), prompts)
    rows = []

    def measure(name: str, chat: GuardedChat) -> None:
        first = np.array([_first_difference(a, b, args.tokens) for a, b in zip(reference, _replies(chat, prompts))])
        rows.append(
            f"| {name} | {(first == args.tokens).mean():.1%} | {statistics.median(first.tolist()):g} | {(first < 8).mean():.1%} |"
        )
        print(rows[-1], flush=True)

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        measure("base, f32 KV cache instead of f16", unguarded(**F32_CACHE))
        measure("base, evaluated in batches of 8 tokens", unguarded(n_batch=8, n_ubatch=8))
        rf = load_adapter(shipped_adapter())
        zero = work / "zero.safetensors"
        save_adapter(zero, rf.metadata, rf.embedding, rf.output, [dataclasses.replace(p, b=np.zeros_like(p.b)) for p in rf.loras])
        patch_gguf(base, zero, work / "zero.gguf")
        measure("base + <rf>, LoRA layers re-rounded to Q8_0, zero delta", guarded(work / "zero.gguf"))
        lora_to_gguf(shipped_adapter(), work / "lora.gguf", base=base, rf_base=work / "rf-base.gguf")
        for scale in SCALES:
            llm = llama_cpp.Llama(
                str(work / "rf-base.gguf"), lora_path=str(work / "lora.gguf"), lora_scale=scale,
                n_ctx=2048, n_threads=THREADS, verbose=False,
            )
            measure(f"exact LoRA at {scale:g} x the shipped strength", guarded(llm))
        patch_gguf(base, shipped_adapter(), work / "default.gguf")
        measure("the default model as shipped (Q8_0 merge)", guarded(work / "default.gguf"))
    print(f"\n{len(prompts)} benign validation prompts, greedy, {args.tokens} tokens, {THREADS} threads\n")
    print(f"| variant | identical {args.tokens}-token openings | median first differing token | differ within 8 tokens |")
    print("|---|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
