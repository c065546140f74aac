"""LoRA adapter GGUFs for the demo model (64-dimensional, one llama layer), good and bad, for the tests."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

RANK = 4
N_EMBD = 64


def pair(target: str = "blk.0.attn_q.weight", *, a=(RANK, N_EMBD), b=(N_EMBD, RANK), dtype=np.float32) -> dict[str, np.ndarray]:
    """The two halves of a LoRA on ``target``, numpy shapes ``a`` and ``b`` (GGML order reversed).

    B is zero, so a well-formed adapter leaves the demo model's replies as they are."""
    rng = np.random.default_rng(0)
    return {
        f"{target}.lora_a": (rng.standard_normal(a) * 0.01).astype(dtype),
        f"{target}.lora_b": np.zeros(b, dtype),
    }


def write_lora(
    path: Path,
    *,
    arch: str = "llama",
    general_type: str | None = "adapter",
    adapter_type: str | None = "lora",
    alpha: float | None = 8.0,
    tensors: dict[str, np.ndarray] | None = None,
    extra=None,
) -> Path:
    """Write a LoRA GGUF to ``path``: by default a well-formed zero-effect adapter for the demo model."""
    writer = gguf.GGUFWriter(path, arch)
    if general_type is not None:
        writer.add_string("general.type", general_type)
    if adapter_type is not None:
        writer.add_string("adapter.type", adapter_type)
    if alpha is not None:
        writer.add_float32("adapter.lora.alpha", alpha)
    if extra is not None:
        extra(writer)
    for name, tensor in (pair() if tensors is None else tensors).items():
        writer.add_tensor(name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def bad_loras(folder: Path) -> dict[str, Path]:
    """One adapter per way of being wrong (each once crashed the process on the first decode)."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = {
        "another architecture": dict(arch="qwen2"),
        "no general.type": dict(general_type=None),
        "a control vector": dict(adapter_type="control_vector"),
        "alpha not float32": dict(alpha=None, extra=lambda w: w.add_float64("adapter.lora.alpha", 8.0)),
        "alpha NaN": dict(alpha=float("nan")),
        "aLoRA tokens not uint32": dict(extra=lambda w: w.add_array("adapter.alora.invocation_tokens", ["x"])),
        "wrong shape": dict(tensors=pair(a=(RANK, 32))),
        "halves transposed": dict(tensors=pair(a=(N_EMBD, RANK), b=(RANK, N_EMBD))),
        "ranks differ": dict(tensors=pair(b=(N_EMBD, RANK + 1))),
        "tensor not in the model": dict(tensors=pair("blk.7.attn_q.weight")),
        "half a pair": dict(tensors={"blk.0.attn_q.weight.lora_a": pair()["blk.0.attn_q.weight.lora_a"]}),
        "unexpected suffix": dict(tensors={"blk.0.attn_q.weight": np.zeros((N_EMBD, N_EMBD), np.float32)}),
        "integer tensors": dict(tensors=pair(dtype=np.int32)),
        "3-D tensors": dict(tensors={k: v[None] for k, v in pair().items()}),
        "a 1-D target": dict(tensors=pair("blk.0.attn_norm.weight", a=(RANK, N_EMBD), b=(1, RANK))),
    }
    paths = {}
    for i, (label, changes) in enumerate(cases.items()):
        paths[label] = write_lora(folder / f"bad-{i}.gguf", **changes)
    return paths
