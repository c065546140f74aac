"""Where q8_0 loses top-1 agreement with transformers: mixed-precision variants, near-ties, rounding.

Writes the checkpoint with ``rf-convert hf --outtype q8_0`` and with some of its matrices kept at
f16/f32 instead (the converter's per-tensor type choice wrapped, for this experiment only), then
runs each file the way ``rf-convert verify`` does (transformers float32 vs llama.cpp with a float32
KV cache, the 16 verify prompts) and prints one row per file: top-1 agreement over all positions
(verify's figure), the HF top-2 logit gap at the disagreements, and agreement and mean KL over
distinct positions (the prompts share their chat-template system prompt, so verify counts those
positions once per prompt). ``--simulate`` rounds the transformers model itself to q8_0 — weights,
the inputs of every matrix multiply (which llama.cpp's q8_0 kernels quantize too), or both — and
``--layers`` rounds one layer at a time, to see where the error comes from.

    python bench/q8_parity.py /tmp/smollm2-rf [--work DIR] [--simulate] [--layers]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType
from rfsdk.convert import hf
from rfsdk.convert import verify as V
from rfsdk.convert.verify_texts import PROMPTS

NEAR_TIE = 0.05
F16, F32 = GGMLQuantizationType.F16, GGMLQuantizationType.F32
Override = Callable[[str], GGMLQuantizationType | None]
"""The storage type of a 2-D tensor, by GGUF name, or None for the converter's own choice."""


def kept(qtype: GGMLQuantizationType, match: Callable[[str], bool]) -> Override:
    return lambda name: qtype if match(name) else None


def contains(part: str) -> Callable[[str], bool]:
    return lambda name: part in name


VARIANTS: dict[str, tuple[str, Override]] = {
    "q8_0": ("q8_0", lambda name: None),
    "q8_0, token_embd (= output) f16": ("q8_0", kept(F16, lambda name: name == "token_embd.weight")),
    "q8_0, token_embd (= output) f32": ("q8_0", kept(F32, lambda name: name == "token_embd.weight")),
    **{
        f"q8_0, {kind} f16": ("q8_0", kept(F16, contains(f".{kind}.")))
        for kind in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    },
    "q8_0 token_embd, layer matrices f16": ("q8_0", kept(F16, lambda name: name.startswith("blk."))),
    "f16": ("f16", lambda name: None),
}


def convert(src: Path, out: Path, outtype: str, override: Override) -> None:
    """``rf-convert hf src out --outtype outtype``, with the 2-D tensors ``override`` names stored as it says."""
    plain = hf._spec

    def spec(plan: Any, weights: Any, direct: str) -> hf.TensorSpec:
        chosen = plain(plan, weights, direct)
        qtype = override(chosen.name) if len(plan.shape) == 2 else None
        return chosen if qtype is None else hf.TensorSpec(chosen.name, chosen.shape, qtype)

    hf._spec = spec
    try:
        hf.convert_hf(src, out, outtype=outtype, force=True)
    finally:
        hf._spec = plain


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def compare(expected: list[np.ndarray], got: list[np.ndarray], sequences: list[list[int]]) -> str:
    """One table row's figures: ``got`` (GGUF logits) against ``expected`` (transformers)."""
    e, g = np.concatenate(expected), np.concatenate(got)
    top2 = np.sort(e, -1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    agree = e.argmax(-1) == g.argmax(-1)
    diff = np.abs(g - e)
    first: dict[tuple[int, ...], int] = {}  # each distinct prefix once: its row in e/g
    row = 0
    for ids in sequences:
        for i in range(len(ids)):
            first.setdefault(tuple(ids[: i + 1]), row)
            row += 1
    rows = np.array(sorted(first.values()))
    pe, pg = log_softmax(e[rows]), log_softmax(g[rows])
    kl = (np.exp(pe) * (pe - pg)).sum(-1)
    near = int((gap[~agree] < NEAR_TIE).sum())
    return (
        f"{agree.mean():.2%} | {diff.max():.3g} | {diff.mean():.3g} | {int((~agree).sum())} ({near}) | "
        f"{agree[rows].mean():.2%} of {rows.size} | {kl.mean():.1e}"
    )


def q8_round(x: Any) -> Any:
    """``x`` (torch) rounded as ggml's q8_0 does along its last axis: blocks of 32, f16 scale amax/127."""
    import torch

    blocks = x.reshape(-1, 32)
    scale = (blocks.abs().amax(-1, keepdim=True) / 127).half().float()
    q = torch.round(blocks / torch.where(scale > 0, scale, 1)).clamp(-127, 127)
    return (q * scale).reshape(x.shape)


def simulate(model: Any, sequences: list[list[int]], expected: list[np.ndarray], layers: bool) -> None:
    """Round the transformers model to q8_0 in place (weights and/or matmul inputs) and compare."""
    import torch

    plain = {name: p.detach().clone() for name, p in model.named_parameters()}
    linears = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}

    def run(label: str, weights: bool, inputs: bool, which: Callable[[str], bool] = lambda name: True) -> None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(q8_round(plain[name]) if weights and p.ndim == 2 and which(name) else plain[name])
        hooks = [
            m.register_forward_pre_hook(lambda m, args: (q8_round(args[0]),))
            for name, m in linears.items()
            if inputs and which(name + ".weight")
        ]
        with torch.no_grad():
            got = [model(torch.tensor([ids])).logits[0].float().numpy() for ids in sequences]
        for hook in hooks:
            hook.remove()
        print(f"| {label} | {compare(expected, got, sequences)} |", flush=True)

    run("simulated: weights q8_0", True, False)
    run("simulated: matmul inputs q8_0", False, True)
    run("simulated: both", True, True)
    if layers:
        for layer in range(model.config.num_hidden_layers):
            run(f"simulated: both, layer {layer} only", True, True, contains(f".layers.{layer}."))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(plain[name])


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="HF checkpoint folder (bench/smollm_rf_checkpoint.py)")
    parser.add_argument("--work", type=Path, help="keep the GGUF files here (default: a temporary folder)")
    parser.add_argument("--simulate", action="store_true", help="also round the transformers model to q8_0")
    parser.add_argument("--layers", action="store_true", help="with --simulate: one layer at a time too")
    args = parser.parse_args()
    import torch

    tokenizer, model = V._load_hf(args.src)
    sequences = [list(tokenizer.encode(V._render(tokenizer, p), add_special_tokens=False)) for p in PROMPTS]
    with torch.no_grad():
        expected = [model(torch.tensor([ids])).logits[0].float().numpy() for ids in sequences]
    print(
        "| variant | MB | top-1, all positions | max \\|logit diff\\| | mean \\|diff\\| "
        f"| disagreements (HF top-2 gap < {NEAR_TIE}) | top-1, distinct positions | mean KL |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="q8-parity-", dir="/tmp") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for i, (label, (outtype, override)) in enumerate(VARIANTS.items()):
            out = work / f"variant-{i}.gguf"
            convert(args.src, out, outtype, override)
            llm = V._load_llama(out, max(len(ids) for ids in sequences) + 16)
            got = []
            for ids in sequences:
                llm.reset()
                llm.eval(ids)
                got.append(np.array(llm.scores[: len(ids)], dtype=np.float32))  # a copy: scores is reused
            del llm
            print(f"| {label} | {out.stat().st_size / 1e6:.0f} | {compare(expected, got, sequences)} |", flush=True)
            if args.work is None:
                out.unlink()
    if args.simulate:
        simulate(model, sequences, expected, args.layers)


if __name__ == "__main__":
    main()
