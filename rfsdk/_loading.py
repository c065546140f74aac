"""Load a GGUF model into llama.cpp and find its <rf> token, with clear errors."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

from .errors import (
    ArgumentTypeError,
    ConfigError,
    ChatTemplateError,
    MissingRfTokenError,
    ModelFileError,
    RfTokenTypeError,
)
from ._gguf_file import read_gguf_info
from ._llama_kwargs import MAX_THREADS, check_llama_kwargs
from ._lora_file import check_lora_file
from ._model_checks import check_model_info, is_threshold
from .model_source import resolve_model
from ._prompt import token_piece

MAX_DEFAULT_CTX = 4096
CTX_PAD = 256
"""llama.cpp rounds the context up to a multiple of this; llama-cpp-python does not, so
rfsdk asks for a multiple itself (otherwise a prompt near the end of the context overruns
llama-cpp-python's token buffer)."""
_RF_TEXT = b"<rf>"


@dataclass(frozen=True)
class LoadedModel:
    """A llama.cpp model plus what the guard needs to know about it."""

    llm: llama_cpp.Llama
    path: Path
    rf_token_id: int | None
    rf_threshold: float | None
    chat_template: str | None

    def template(self, override: str | None = None) -> str:
        """``override``, else the model's own chat template; a :class:`ChatTemplateError` if neither exists."""
        template = override or self.chat_template
        if not template:
            raise ChatTemplateError(
                f"{self.path} has no chat template. Pass chat_template=... "
                "(rfsdk.CHATML_TEMPLATE fits ChatML models such as SmolLM2 and Qwen2)."
            )
        return template


def load_model(
    model: str | os.PathLike | llama_cpp.Llama,
    *,
    n_ctx: int | None,
    n_gpu_layers: int,
    n_threads: int | None,
    allow_unguarded: bool,
    verbose: bool,
    llama_kwargs: Mapping[str, object] | None = None,
) -> LoadedModel:
    """Resolve and load ``model`` (or inspect an already loaded ``Llama``).

    The GGUF header is checked before llama.cpp sees the file, so a missing <rf>
    token, a truncated download or a file of another kind fails fast and clearly, and so
    does metadata that would crash llama.cpp (see :mod:`rfsdk._model_checks`). ``n_ctx`` is
    rounded up to a multiple of :data:`CTX_PAD`. ``llama_kwargs`` go to ``llama_cpp.Llama``
    (checked by :func:`rfsdk._llama_kwargs.check_llama_kwargs`; a ``lora_path`` against the
    model by :func:`rfsdk._lora_file.check_lora_file`).
    """
    _check_settings(model, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, n_threads=n_threads)
    extra = check_llama_kwargs(llama_kwargs)
    if isinstance(model, llama_cpp.Llama):
        if extra:
            raise ConfigError(
                "llama_kwargs apply only when rfsdk loads the model; this Llama is already loaded "
                "with its own settings. Pass the GGUF path instead, or set them when creating the Llama."
            )
        loaded = _inspect_loaded(model)
    else:
        path = resolve_model(model)
        info = read_gguf_info(path)
        check_model_info(info)
        if info.rf_token_id is not None:
            _check_control(path, info.rf_token_id, info.rf_token_type == int(llama_cpp.LLAMA_TOKEN_TYPE_CONTROL))
        elif not allow_unguarded:
            raise _missing_rf(path)
        if extra.get("lora_path") is not None:
            check_lora_file(str(extra["lora_path"]), info)
        context = _padded(n_ctx or min(info.context_length or MAX_DEFAULT_CTX, MAX_DEFAULT_CTX))
        if "n_batch" in extra:
            # llama-cpp-python uses min(n_ctx, n_batch) but sizes its logits buffer by n_batch itself.
            extra["n_batch"] = min(int(extra["n_batch"]), context)  # type: ignore[call-overload]
        llm = _load_llama(
            path,
            n_ctx=context,
            n_gpu_layers=n_gpu_layers,
            n_threads=n_threads,
            verbose=verbose,
            **extra,
        )
        loaded = LoadedModel(llm, path, info.rf_token_id, info.rf_threshold, info.chat_template)
    if loaded.rf_token_id is None and not allow_unguarded:
        raise _missing_rf(loaded.path)
    return loaded


def _check_settings(model: object, *, n_ctx: object, n_gpu_layers: object, n_threads: object) -> None:
    if not isinstance(model, (str, os.PathLike, llama_cpp.Llama)):
        raise ArgumentTypeError(
            f"model must be a GGUF path, an hf://org/repo/file.gguf address or a llama_cpp.Llama, not {model!r}"
        )
    for name, value, least, most, optional in (
        ("n_ctx", n_ctx, 1, None, True),
        ("n_threads", n_threads, 1, MAX_THREADS, True),
        ("n_gpu_layers", n_gpu_layers, -1, None, False),
    ):
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least or (most is not None and value > most):
            accepted = f">= {least}" if most is None else f"from {least} to {most}"
            raise ConfigError(f"{name} must be a whole number {accepted}{' or None' if optional else ''}, not {value!r}")


def _padded(n_ctx: int) -> int:
    return max(1, -(-n_ctx // CTX_PAD)) * CTX_PAD


def _missing_rf(path: Path) -> MissingRfTokenError:
    return MissingRfTokenError(
        f"{path} has no <rf> token, so its replies cannot be guarded. Use a model trained "
        "with rf-train and exported with rf-convert, or pass allow_unguarded=True to chat "
        "without a guard."
    )


def _check_control(path: Path, rf_id: int, is_control: bool) -> None:
    if not is_control:
        raise RfTokenTypeError(
            f"{path} has <rf> as token {rf_id}, but not as a CONTROL token, so typed text "
            "could produce it. Re-export the model with rf-convert."
        )


def _load_llama(path: Path, **params) -> llama_cpp.Llama:
    try:
        llm = llama_cpp.Llama(model_path=str(path), **params)
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelFileError(
            f"llama.cpp could not load {path} ({exc}). The file's GGUF structure is valid, so "
            "its architecture or tensor types may be newer than the installed llama-cpp-python "
            f"{llama_cpp.__version__}: upgrade it, or re-export the model with rf-convert."
            + _settings_hint(params)
        ) from None
    if params.get("lora_path") and not getattr(llm, "_lora_adapter", None):
        # llama.cpp refused the adapter (a NULL pointer, which llama-cpp-python does not notice);
        # decoding with it would crash the process.
        llm.close()
        raise ConfigError(
            f"llama_kwargs: llama.cpp could not apply the LoRA adapter {params['lora_path']} to {path} "
            "(see its log with verbose=True). Use an adapter made for this model."
        )
    return llm


def _settings_hint(params: dict[str, object]) -> str:
    """A sentence about the llama_kwargs among ``params``, which may be what llama.cpp refused."""
    rfsdk_set = {"n_ctx", "n_gpu_layers", "n_threads", "verbose"}
    extra = {k: v for k, v in params.items() if k not in rfsdk_set}
    if not extra:
        return ""
    return f" It was loaded with llama_kwargs={extra!r}: try without them, as they may not suit this model or build."


def _inspect_loaded(llm: llama_cpp.Llama) -> LoadedModel:
    meta = llm.metadata
    path = Path(llm.model_path)
    if len(llm.input_ids) < llm.n_ctx():
        raise ConfigError(
            f"This Llama was created with n_ctx={len(llm.input_ids)}, which llama.cpp rounds up to "
            f"{llm.n_ctx()}; llama-cpp-python {llama_cpp.__version__} then fails on prompts longer "
            f"than {len(llm.input_ids)} tokens. Create it with n_ctx={llm.n_ctx()} (a multiple of {CTX_PAD})."
        )
    rf_id: int | None = None
    if meta.get("rf.token", "").isdigit():
        rf_id = int(meta["rf.token"])
    else:
        ids = llm.tokenize(_RF_TEXT, add_bos=False, special=True)
        if len(ids) == 1 and token_piece(llm, ids[0], special=True) == _RF_TEXT:
            rf_id = ids[0]
    if rf_id is not None:
        attr = llama_cpp.llama_vocab_get_attr(llm._model.vocab, rf_id)
        _check_control(path, rf_id, bool(attr & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL))
    threshold = _checked_threshold(path, _loaded_threshold(path, meta.get("rf.threshold")))
    return LoadedModel(llm, path, rf_id, threshold, meta.get("tokenizer.chat_template"))


def _loaded_threshold(path: Path, text: str | None) -> float | str | None:
    # llama-cpp-python shows float metadata with 6 decimals; the file's header has the float32.
    if text is None or not path.is_file():
        return text
    stat = path.stat()
    return _header_threshold(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _header_threshold(path: Path, mtime_ns: int, size: int) -> float | None:
    """rf.threshold from the file's header, read once per file version: chats made on one
    loaded ``Llama`` (one per request in rf-serve) skip re-parsing the header's vocabulary."""
    return read_gguf_info(path).rf_threshold


def _checked_threshold(path: Path, value: float | str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not is_threshold(number):
        raise ModelFileError(
            f"{path} is corrupt: rf.threshold is {value!r}, not a probability in (0, 1]. "
            "Re-download or re-export the model."
        )
    return number
