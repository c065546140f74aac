"""Load the base model and tokenizer to train: a Hugging Face folder or a GGUF file."""

from __future__ import annotations

from pathlib import Path

from rfsdk.errors import ModelNotFoundError


def load_base(source: str | Path):
    """(model, tokenizer) in float32 from a checkpoint folder or a ``.gguf`` file.

    A GGUF is dequantized by transformers (``gguf_file=``), so a quantized file trains
    as its float version; no model hub is contacted.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        kwargs = {"gguf_file": path.name}
        folder = path.parent
    elif path.is_dir() and (path / "config.json").is_file():
        kwargs = {}
        folder = path
    else:
        raise ModelNotFoundError(
            f"No base model at {path}: pass a Hugging Face checkpoint folder (with config.json) "
            "or a .gguf file."
        )
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(
        folder, local_files_only=True, dtype=torch.float32, **kwargs
    )
    model.eval()
    return model, tokenizer
