"""Build the HF checkpoint the conversion figures use: SmolLM2-135M-Instruct plus a trained-looking <rf>.

The bundled SmolLM2 GGUF is loaded by transformers (``gguf_file=``, dequantized to float32),
<rf> is added with the training code (:meth:`rfsdk.train.rf_model.RfModel.prepare`), the LoRA
gets small random weights (seeded, its initialisation included, so a build repeats byte for byte;
B is nonzero, so the merge changes every targeted matrix), and the result is written as an
``rfsdk-adapter/1`` file and merged by ``rf-train merge``
(:func:`rfsdk.train.merge_hf.merge_into_checkpoint`) into a ``save_pretrained`` checkpoint.
``--adapter`` keeps the adapter file, for ``rf-convert lora``.

    python bench/smollm_rf_checkpoint.py /tmp/smollm2-rf [--adapter /tmp/smollm2-rf.adapter.safetensors]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from rfsdk.model_source import default_base_model_path
from rfsdk.train.base import load_base
from rfsdk.train.merge_hf import merge_into_checkpoint
from rfsdk.train.rf_model import RfModel


def build(out: Path, adapter: Path | None, seed: int = 0) -> None:
    """Write the merged checkpoint to ``out`` (and the unmerged adapter to ``adapter``)."""
    base = default_base_model_path()
    model, tokenizer = load_base(base)
    torch.manual_seed(seed)  # LoRA A's initialisation
    rf = RfModel.prepare(model, tokenizer, rank=8, alpha=16.0)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lora in rf.loras.values():
            lora.lora_b.copy_(torch.randn(lora.lora_b.shape, generator=generator) * 0.02)
        rf.rows[0] += torch.randn(rf.rows[0].shape[0], generator=generator) * 0.05
    with tempfile.TemporaryDirectory() as folder:
        path = adapter or Path(folder) / "adapter.safetensors"
        rf.save_adapter(path, base_model="SmolLM2-135M-Instruct", threshold=0.5)
        merge_into_checkpoint(path, base, out)


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--adapter", type=Path)
    args = parser.parse_args()
    build(args.out, args.adapter)


if __name__ == "__main__":
    main()
