"""The base model to train: finding it (a GGUF, a checkpoint folder or a cached repo id), identifying
it by a checksum, loading it, and checking an adapter was trained on it."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from rfsdk.convert.adapter import Adapter, file_sha256
from rfsdk.errors import ChatTemplateError, ModelNotFoundError, RfsdkError

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TOKENIZER_FILES = frozenset({
    "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
})
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")


class AdapterMismatchError(RfsdkError, ValueError):
    """The adapter a run should start from was trained on another model or LoRA shape."""


class BaseMismatchError(RfsdkError, ValueError):
    """A run or a command was given another base than the one its adapter or checkpoint was trained on."""


class BaseFormatError(RfsdkError, ValueError):
    """The base is in a form this step cannot use (a checkpoint folder where a GGUF is needed)."""


def resolve_base(source: str | Path) -> Path:
    """The local GGUF file or checkpoint folder ``source`` names.

    ``source`` is a path, or a Hugging Face repo id (``org/name``) already in the local
    Hugging Face cache; nothing is downloaded.
    """
    path = Path(source).expanduser()
    if path.exists():
        return path
    text = str(source)
    if _REPO_ID.match(text):
        import huggingface_hub
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

        try:
            return Path(huggingface_hub.snapshot_download(text, local_files_only=True))
        except (LocalEntryNotFoundError, HFValidationError, FileNotFoundError, OSError):
            raise ModelNotFoundError(
                f"No base model at {path}, and the Hugging Face repo {text} is not in the local cache (rfsdk never "
                f"downloads a base itself). Fetch it with `huggingface-cli download {text}` (or `hf download {text}`) "
                "and run this again, or pass the checkpoint folder or .gguf file."
            ) from None
    raise ModelNotFoundError(
        f"No base model at {path}: pass a Hugging Face checkpoint folder (with config.json), a .gguf file, "
        "or the id (org/name) of a repo in the local Hugging Face cache."
    )


def base_sha256(base: Path) -> str:
    """The checksum an adapter records for its base.

    A GGUF: the file's sha256. A checkpoint folder: the sha256 of the names and sha256s of
    its config, weight and tokenizer files, so another model or tokenizer gives another sum.
    """
    if base.is_file():
        return file_sha256(base)
    files = sorted(
        p for p in base.iterdir()
        if p.is_file() and (p.name == "config.json" or p.name in _TOKENIZER_FILES or p.name.endswith(_WEIGHT_SUFFIXES))
    )
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def check_trained_on(
    adapter: Path, rf: Adapter, base: Path, base_sha: str | None = None, *, defaulted: bool = False
) -> None:
    """Refuse a ``base`` (GGUF or checkpoint folder) that is not the one ``rf`` (read from ``adapter``) was trained on.

    Passes when the adapter records no base checksum, unless ``defaulted`` (``base`` is the
    bundled default, taken because no base was named) and the adapter names another base.
    ``base_sha`` saves hashing ``base`` again when the caller has it.
    """
    expected = rf.metadata.base_sha256
    if expected is None:
        if defaulted and rf.metadata.base_model != base.name:
            raise BaseMismatchError(
                f"{adapter} was trained on {rf.metadata.base_model!r}, not the bundled default base {base.name}; "
                "pass the model it was trained on as --base."
            )
        return
    actual = base_sha or base_sha256(base)
    if actual == expected:
        return
    if defaulted:
        raise BaseMismatchError(
            f"{adapter} was trained on {rf.metadata.base_model!r} (sha256 {expected}), not the bundled default base "
            f"{base.name}; pass the model it was trained on as --base."
        )
    raise BaseMismatchError(
        f"{adapter} was trained on another base file (sha256 {expected}; {base} has {actual}); "
        "pass that base as --base."
    )


def require_gguf(base: Path, command: str) -> None:
    """Refuse a checkpoint folder as the base of ``command``, which runs the base through llama.cpp."""
    if base.is_file() and base.suffix == ".gguf":
        return
    raise BaseFormatError(
        f"{command} measures through llama.cpp and needs the base as a .gguf file, not {base}. Convert the checkpoint "
        f"once with `rf-convert hf {base} base.gguf --no-rf` and train on that file (`rf-train fit --base base.gguf`): "
        "an adapter is checked against the exact base it was trained on."
    )


def _location(source: Path) -> tuple[Path, dict]:
    path = source.expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, {"gguf_file": path.name}
    if path.is_dir() and (path / "config.json").is_file():
        return path, {}
    raise ModelNotFoundError(
        f"No base model at {path}: pass a Hugging Face checkpoint folder (with config.json) or a .gguf file."
    )


def load_tokenizer(source: Path, *, chat: bool = True):
    """The base's tokenizer; with ``chat``, refused unless it has the chat template training lays examples out with."""
    from transformers import AutoTokenizer

    folder, kwargs = _location(source)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, **kwargs)
    if chat and not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            f"{source} has no chat template, so training examples cannot be laid out as chat turns. Train a chat "
            "(instruct) model, or add its chat_template to tokenizer_config.json."
        )
    return tokenizer


def load_model(source: Path, *, dtype: str = "fp32"):
    """The base model, in eval mode, its weights in ``dtype`` (``fp32`` or ``bf16``).

    A GGUF is dequantized by transformers (``gguf_file=``), so a quantized file trains as
    its float version; no model hub is contacted.
    """
    import torch
    from transformers import AutoModelForCausalLM

    folder, kwargs = _location(source)
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch_dtype, **kwargs)
    model.eval()
    return model


def enable_checkpointing(model) -> None:
    """Recompute each decoder layer's activations in the backward pass instead of keeping them."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False


def load_base(source: str | Path):
    """(model, tokenizer) in float32 from a checkpoint folder or a ``.gguf`` file (no chat template needed)."""
    path = Path(source)
    return load_model(path), load_tokenizer(path, chat=False)
