"""The base model to train: loading it (a Hugging Face folder or a GGUF file), and checking an adapter was trained on it."""

from __future__ import annotations

from pathlib import Path

from rfsdk.convert.adapter import Adapter, file_sha256
from rfsdk.errors import ModelNotFoundError, RfsdkError


class AdapterMismatchError(RfsdkError, ValueError):
    """The adapter a run should start from was trained on another model or LoRA shape."""


def check_trained_on(adapter: Path, rf: Adapter, base: Path, base_sha256: str | None = None) -> None:
    """Refuse a GGUF ``base`` that is not the file ``rf`` (read from ``adapter``) was trained on.

    Passes when the adapter records no base checksum or ``base`` is a checkpoint folder.
    ``base_sha256`` saves hashing ``base`` again when the caller has it.
    """
    expected = rf.metadata.base_sha256
    if expected is None or not base.is_file():
        return
    actual = base_sha256 or file_sha256(base)
    if actual != expected:
        raise AdapterMismatchError(
            f"{adapter} was trained on another base file (sha256 {expected}; {base} has {actual}); "
            "pass that base as --base."
        )


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
