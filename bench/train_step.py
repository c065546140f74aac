"""One optimizer step of `rf-train fit` against a plain PEFT LoRA step: seconds, peak memory, optimizer state.

Both sides load the same base (the bundled SmolLM2-135M-Instruct GGUF, dequantized to
float32 by transformers; no download), put LoRA of the same rank and alpha on the same seven
projections of every layer, and take AdamW steps on the same examples: ``--batch-size``
harmful and as many benign training examples of the dataset, cut to ``--max-len`` tokens.

* rf-train: the step :func:`rfsdk.train.loop.train` takes for ``rf-train fit``
  (:func:`rfsdk.train.loss.batch_terms`: the trained network once over the padded batch with
  <rf> inserted, the frozen base once for the KL terms, in the precision ``--base-pass``
  resolves to as ``rf-train fit --base-pass`` does; AdamW on the LoRA and the <rf> row),
  on the same fixed batch every step (the <rf> positions drawn once, seeded);
* rf-train, fp32 base pass (``--with-fp32-base-pass``): the same with the frozen base's pass
  in float32;
* PEFT: ``peft.get_peft_model`` on the same model, the padded batch of the same sequences
  (without <rf>), the ordinary causal-LM loss on the answer tokens;
* PEFT + KL (``--with-peft-kl``): the same PEFT model with the red-flag method's KL term
  written the plain way (the frozen base through ``disable_adapter()`` without gradients, in
  rf-train's base-pass precision, then KL(base ‖ model) over the answer positions), the
  like-for-like cost of the objective.

Each side runs in its own process (so neither inherits the other's allocator state), sides
alternate over ``--rounds``; the first step of each process is a warm-up and not timed.
Peak memory is the process's peak resident set during the steps (Linux ``VmHWM``, reset
after loading) over its resident set before them; on CUDA, ``torch.cuda.max_memory_allocated``.

``--random-shape llama-3.2-1b`` trains a model of Llama-3.2-1B's shape with random weights
instead (no download; the same token ids), for the times and memory of a 1B-class model.
tokens/s counts every token of the batch's sequences once per step.

    python bench/train_step.py [--batch-size 2] [--steps 3] [--rounds 2] [--threads 1] [--device cpu]
        [--base-pass auto] [--with-fp32-base-pass] [--with-peft-kl] [--random-shape llama-3.2-1b]
        [--dtype bf16] [--gradient-checkpointing]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def _timed_steps(steps: int, device, one_step) -> tuple[int, list[float]]:
    """Run ``one_step`` once to warm up, then ``steps`` more times, timed.

    Returns the RSS (kB) before the warm-up step and each timed step's seconds; the peak
    counters (RSS high-water mark, CUDA peak) are reset before the warm-up step.
    """
    import torch

    _reset_peak()
    before_kb = _rss_kb("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for step in range(steps + 1):
        started = time.perf_counter()
        one_step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:
            seconds.append(time.perf_counter() - started)
    return before_kb, seconds


def _examples(tokenizer, batch: int, max_len: int, seed: int):
    import random

    from rfsdk.model_source import cache_dir
    from rfsdk.train.data import load_dataset
    from rfsdk.train.recipe import RecipeConfig, build_training_set

    data = build_training_set(load_dataset().split("train"), tokenizer, RecipeConfig(max_len=max_len, onpolicy_harmful=0),
                              onpolicy_model=None, cache_dir=cache_dir() / "bench")
    rng = random.Random(seed)
    harmful = [e for e in data.harmful if e.answer]
    return rng.sample(harmful, batch), rng.sample(data.benign, batch)


RANDOM_SHAPES = {
    # Llama-3.2-1B's shape (its config.json), with random weights: no download.
    "llama-3.2-1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                         rope_theta=500000.0, tie_word_embeddings=True),
}


def _random_model(shape: str, dtype: str):
    """A Llama of ``shape`` with random weights (seeded), in eval mode like :func:`load_model`'s."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(**RANDOM_SHAPES[shape])
    model = transformers.LlamaForCausalLM._from_config(config, dtype={"fp32": torch.float32, "bf16": torch.bfloat16}[dtype])
    model.eval()
    return model


def _side(side: str, args: argparse.Namespace) -> dict:
    import torch

    from rfsdk.model_source import default_base_model_path
    from rfsdk.train.base import enable_checkpointing, load_model, load_tokenizer

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    base = default_base_model_path()
    tokenizer = load_tokenizer(base)
    harmful, benign = _examples(tokenizer, args.batch_size, args.max_len, args.seed)
    model = load_model(base, dtype=args.dtype) if args.random_shape is None else _random_model(args.random_shape, args.dtype)
    if args.gradient_checkpointing:
        enable_checkpointing(model)
    model.to(device)
    from rfsdk.train.precision import base_pass_bf16

    base_bf16 = base_pass_bf16("fp32" if side == "rf-train-fp32-base" else args.base_pass, device, args.dtype)
    if side.startswith("rf-train"):
        import random

        from rfsdk.train.loop import TrainConfig, sample_position
        from rfsdk.train.loss import HarmfulItem, LossWeights, batch_terms, total
        from rfsdk.train.rf_model import RfModel

        torch.manual_seed(args.seed)
        rf = RfModel.prepare(model, tokenizer, rank=args.rank, alpha=2.0 * args.rank)
        trainable = rf.trainable()
        optimizer = torch.optim.AdamW(rf.parameter_groups(1e-3, 1e-2))
        config, rng = TrainConfig(start_probability=0.5, max_offset=32), random.Random(args.seed)
        items = [HarmfulItem(h.prompt, h.answer, sample_position(len(h.answer), config, rng)) for h in harmful]
        pairs = [(b.prompt, b.answer) for b in benign]
        rf.model.train()

        def one_step() -> None:  # the step rf-train fit's loop takes, on this fixed batch
            optimizer.zero_grad()
            with rf.autocast():
                loss = sum(total(terms, LossWeights()) for terms in batch_terms(rf, items, pairs, base_bf16=base_bf16)) / args.batch_size
            loss.backward()
            optimizer.step()

        before_kb, step_seconds = _timed_steps(args.steps, device, one_step)
        rows = sum(r.numel() for r in rf.rows)
        matrices = model.get_input_embeddings().weight.numel() * len(rf.rows)
        extra = {"rf_row_optimizer_values": 2 * rows, "embedding_optimizer_values_if_whole_matrix": 2 * matrices}
    else:
        import peft
        import torch.nn.functional as F

        torch.manual_seed(args.seed)
        model = peft.get_peft_model(model, peft.LoraConfig(r=args.rank, lora_alpha=2.0 * args.rank, target_modules=list(TARGETS), lora_dropout=0.0))
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.0)
        sequences = [(e.prompt, e.answer) for e in harmful + benign]
        width = max(len(p) + len(a) for p, a in sequences)
        ids = torch.zeros(len(sequences), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for row, (p, a) in enumerate(sequences):
            ids[row, : len(p) + len(a)] = torch.tensor(p + a)
            mask[row, : len(p) + len(a)] = 1
            labels[row, len(p) : len(p) + len(a)] = torch.tensor(a)
        ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
        model.train()
        answer = labels[:, 1:] != -100  # the positions whose logits predict an answer token

        def one_step() -> None:
            optimizer.zero_grad()
            if side == "peft":
                model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            else:  # the same objective as rf-train's benign term: KL to the frozen base at the answer positions
                with torch.no_grad(), model.disable_adapter(), torch.autocast(device.type, torch.bfloat16, enabled=base_bf16):
                    base = model(input_ids=ids, attention_mask=mask).logits[:, :-1][answer].float().log_softmax(-1)
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1][answer]
                F.kl_div(logits.log_softmax(-1), base, log_target=True, reduction="batchmean").backward()
            optimizer.step()

        before_kb, step_seconds = _timed_steps(args.steps, device, one_step)
        extra = {}
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else (_rss_kb("VmHWM") - before_kb) / 1024)
    return {
        "side": side, "tokens": sum(len(e.prompt) + len(e.answer) for e in harmful + benign),
        "resident_before_mib": before_kb / 1024 if device.type == "cpu" else torch.cuda.memory_allocated() / 2**20, "base_pass": None if side == "peft" else "bf16" if base_bf16 else "fp32", "step_seconds": step_seconds, "peak_step_mib": peak, "trainable_values": sum(p.numel() for p in trainable),
        **extra,
    }


def main() -> None:
    """Run both sides in alternating child processes and print the table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=2, help="Harmful and benign examples per step (each).")
    parser.add_argument("--max-len", type=int, default=192)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="Timed steps per process (after one warm-up step).")
    parser.add_argument("--rounds", type=int, default=2, help="Processes per side, alternating.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--random-shape", choices=sorted(RANDOM_SHAPES), help="Train a model of this shape with random "
                        "weights instead of the bundled base (the same token ids; times and memory, not quality).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base-pass", choices=["auto", "fp32", "bf16"], default="auto", help="rf-train fit --base-pass (also PEFT + KL's).")
    parser.add_argument("--with-fp32-base-pass", action="store_true", help="Also time rf-train with the base's pass in float32.")
    parser.add_argument("--with-peft-kl", action="store_true", help="Also time PEFT with the method's KL to the frozen base.")
    parser.add_argument("--side", choices=["rf-train", "rf-train-fp32-base", "peft", "peft+kl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(_side(args.side, args)))
        return
    results: dict[str, list[dict]] = {"rf-train": [], **({"rf-train-fp32-base": []} if args.with_fp32_base_pass else {}), "peft": [],
                                      **({"peft+kl": []} if args.with_peft_kl else {})}
    for _ in range(args.rounds):
        for side in results:
            command = [sys.executable, __file__, *sys.argv[1:], "--side", side]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            results[side].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{side}: {results[side][-1]}", file=sys.stderr)
    summary = {}
    for side, runs in results.items():
        seconds = [s for run in runs for s in run["step_seconds"]]
        summary[side] = {"seconds": statistics.median(seconds), "peak": max(run["peak_step_mib"] for run in runs),
                         "trainable": runs[0]["trainable_values"], "base_pass": runs[0]["base_pass"],
                         "tokens": runs[0]["tokens"], "before": max(run["resident_before_mib"] for run in runs)}
    print(f"model {args.random_shape or 'SmolLM2-135M-Instruct'}, device {args.device}, threads {args.threads}, dtype {args.dtype}, "
          f"gradient checkpointing {args.gradient_checkpointing}, batch {args.batch_size}+{args.batch_size}, "
          f"rank {args.rank}, max_len {args.max_len}, {args.rounds} x {args.steps} timed steps per side")
    print("| step | base pass | s/step (median) | tokens/s | peak step memory MiB | memory before the steps MiB | trainable values |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for side, s in summary.items():
        print(f"| {side} | {s['base_pass'] or '-'} | {s['seconds']:.2f} | {s['tokens'] / s['seconds']:.0f} | {s['peak']:.0f} | "
              f"{s['before']:.0f} | {s['trainable']:,} |")
    ours, theirs = summary["rf-train"], summary["peft"]
    run = results["rf-train"][0]
    print(f"time ratio rf-train/PEFT {ours['seconds'] / theirs['seconds']:.2f}, memory ratio {ours['peak'] / theirs['peak']:.2f}; "
          f"<rf>-row optimizer state {run['rf_row_optimizer_values']:,} values = "
          f"{100 * run['rf_row_optimizer_values'] / run['embedding_optimizer_values_if_whole_matrix']:.4f}% of the embedding's")
    if "rf-train-fp32-base" in summary:
        fp32 = summary["rf-train-fp32-base"]
        print(f"rf-train with an fp32 base pass / PEFT: time ratio {fp32['seconds'] / theirs['seconds']:.2f}, "
              f"memory ratio {fp32['peak'] / theirs['peak']:.2f}")
    if "peft+kl" in summary:
        same = summary["peft+kl"]
        print(f"like for like, rf-train/(PEFT + KL): time ratio {ours['seconds'] / same['seconds']:.2f}, "
              f"memory ratio {ours['peak'] / same['peak']:.2f}")


if __name__ == "__main__":
    main()
