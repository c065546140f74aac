"""rfchat's --model: a local GGUF path, hf://org/repo/file.gguf, or a Hugging Face repo id."""

from __future__ import annotations

import os
import re
from pathlib import Path

from rfsdk import ModelNotFoundError, _constants, resolve_model
from rfsdk.model_source import hf_cache_folder

_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")


def resolve_model_arg(model: str, model_file: str | None = None) -> Path:
    """The local model file that ``--model`` (and ``--model-file``) name, downloading it if needed.

    A repo id ``org/repo`` without ``model_file`` picks the repo's only .gguf file: from
    the rfsdk cache when it already holds exactly one, otherwise by listing the repo.
    """
    if model_file is not None:
        return resolve_model(model, filename=model_file)
    if _is_repo_id(model):
        return resolve_model(model, filename=_only_gguf(model))
    return resolve_model(model)


def _is_repo_id(model: str) -> bool:
    return (
        _REPO_ID.fullmatch(model) is not None
        and not model.endswith(".gguf")
        and not os.path.exists(os.path.expanduser(model))
    )


def _only_gguf(repo_id: str) -> str:
    folder = hf_cache_folder(repo_id)
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.gguf"))
    if not names:
        names = _remote_ggufs(repo_id, folder)
    if len(names) == 1:
        return names[0]
    if not names:
        raise ModelNotFoundError(
            f"The Hugging Face repo {repo_id} has no .gguf file. rfchat runs GGUF models: "
            "convert one with rf-convert, or pick a repo that has one."
        )
    raise ModelNotFoundError(
        f"The Hugging Face repo {repo_id} has several GGUF files ({', '.join(names)}). "
        f"Pick one: rfchat -m {repo_id} --model-file FILE."
    )


def _remote_ggufs(repo_id: str, folder: Path) -> list[str]:
    hint = (
        f"Name the file with --model-file FILE, or place the .gguf file in {folder} "
        "(a file there needs no network)."
    )
    if _constants.hf_offline():
        raise ModelNotFoundError(
            f"Cannot list the files of the Hugging Face repo {repo_id}: HF_HUB_OFFLINE is set. {hint}"
        )
    import huggingface_hub

    try:
        files = huggingface_hub.list_repo_files(repo_id)
    except Exception as exc:  # network, HTTP and naming failures come as many types
        raise ModelNotFoundError(
            f"Cannot list the files of the Hugging Face repo {repo_id} ({type(exc).__name__}: {exc}). "
            f"Check the name at https://huggingface.co/{repo_id}. {hint}"
        ) from None
    return sorted(f for f in files if f.endswith(".gguf"))
