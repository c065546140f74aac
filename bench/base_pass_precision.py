"""What a bfloat16 frozen-base pass costs in accuracy and saves in time, on real training answers.

`rf-train fit --base-pass auto` runs the frozen base (the KL terms' teacher) under bfloat16
autocast where the device computes bfloat16 natively. This measures, on ``--examples`` benign
training examples of the dataset (the base's own answers where cached, as ``fit`` trains on):

* KL(fp32 pass ‖ bf16 pass) per answer token: mean, median, 99th percentile and maximum,
  against the recipe's utility budget of 0.02 nats/token;
* the seconds of each pass over the same sequences (best of ``--repeats``, after a warm-up).

Loads the bundled SmolLM2-135M-Instruct GGUF dequantized to float32 (no download).

    python bench/base_pass_precision.py [--examples 16] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import time


def main() -> None:
    """Print the KL between the two passes' answer distributions and their times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--max-len", type=int, default=192)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from rfsdk.model_source import cache_dir, default_base_model_path
    from rfsdk.train.base import load_model, load_tokenizer
    from rfsdk.train.data import load_dataset
    from rfsdk.train.precision import native_bf16
    from rfsdk.train.recipe import RecipeConfig, build_training_set
    from rfsdk.train.rf_model import RfModel

    torch.set_num_threads(args.threads)
    base = default_base_model_path()
    tokenizer = load_tokenizer(base)
    data = build_training_set(load_dataset().split("train"), tokenizer, RecipeConfig(max_len=args.max_len, onpolicy_harmful=0),
                              onpolicy_model=None, cache_dir=cache_dir() / "bench")
    benign = random.Random(args.seed).sample(data.benign, args.examples)
    rf = RfModel.prepare(load_model(base), tokenizer)

    def answer_log_probs(bf16: bool) -> list[torch.Tensor]:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return [rf.base_logits(e.prompt + e.answer)[len(e.prompt) - 1 : -1].log_softmax(-1) for e in benign]

    def best_seconds(bf16: bool) -> float:
        answer_log_probs(bf16)
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            answer_log_probs(bf16)
            times.append(time.perf_counter() - started)
        return min(times)

    fp32_seconds, bf16_seconds = best_seconds(False), best_seconds(True)
    kl = torch.cat([(p.exp() * (p - q)).sum(-1) for p, q in zip(answer_log_probs(False), answer_log_probs(True))])
    tokens = sum(len(e.prompt) + len(e.answer) for e in benign)
    print(f"{args.examples} benign training examples, {tokens} tokens, {kl.numel()} answer positions; "
          f"threads {args.threads}; CPU computes bfloat16 natively: {native_bf16(torch.device('cpu'))}")
    print(f"KL(fp32 pass || bf16 pass) per answer token: mean {kl.mean():.5f}, median {kl.median():.5f}, "
          f"99th percentile {kl.quantile(0.99):.5f}, max {kl.max():.4f} (utility budget 0.02)")
    print(f"base pass seconds: fp32 {fp32_seconds:.2f}, bf16 {bf16_seconds:.2f} ({fp32_seconds / bf16_seconds:.2f}x as fast)")


if __name__ == "__main__":
    main()
