"""The base model's own answers to prompts, generated with llama.cpp and cached (resumable)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Iterable, Iterator

from pydantic import BaseModel, ConfigDict

from rfsdk import GuardedChat, SamplingConfig

from .llama_settings import llama_settings


class Completion(BaseModel):
    """One generated answer."""

    model_config = ConfigDict(frozen=True)

    prompt_id: str
    prompt: str
    answer: str
    finish_reason: str
    settings: str


def generate_completions(
    model: str | Path,
    prompts: Iterable[tuple[str, str]],
    cache: Path,
    *,
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, max_tokens=128, seed=0),
    n_threads: int | None = None,
    n_gpu_layers: int | None = None,
    on_done: Callable[[int], None] | None = None,
) -> Iterator[Completion]:
    """Yield an answer for every ``(prompt_id, prompt)``, generating only what ``cache`` lacks.

    The cache is a JSONL file; every finished answer is appended at once, so an
    interrupted run continues where it stopped. Answers made with other settings or
    another model file are not reused. ``n_threads`` and ``n_gpu_layers`` default to the
    :func:`~rfsdk.train.llama_settings.llama_settings` in force.
    """
    ambient = llama_settings()
    settings = _settings_key(Path(model), sampling)
    done = {c.prompt_id: c for c in _read(cache) if c.settings == settings}
    chat: GuardedChat | None = None
    cache.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with cache.open("a", encoding="utf-8") as out:
        if not _ends_with_newline(cache):
            out.write("\n")  # end a line an interruption cut short
        for prompt_id, prompt in prompts:
            completion = done.get(prompt_id)
            if completion is None:
                if chat is None:
                    chat = GuardedChat(
                        model, allow_unguarded=True, sampling=sampling, n_threads=n_threads or ambient.n_threads,
                        n_gpu_layers=ambient.n_gpu_layers if n_gpu_layers is None else n_gpu_layers,
                    )
                chat.reset()
                reply = chat.send(prompt)
                completion = Completion(
                    prompt_id=prompt_id, prompt=prompt, answer=reply.text,
                    finish_reason=reply.finish_reason, settings=settings,
                )
                out.write(completion.model_dump_json() + "\n")
                out.flush()
            count += 1
            if on_done is not None:
                on_done(count)
            yield completion


def _settings_key(model: Path, sampling: SamplingConfig) -> str:
    stat = model.stat()  # the modification time too: every recipe run's base is a base.gguf, of one size per architecture
    identity = f"{model.name}:{stat.st_size}:{stat.st_mtime_ns}:{sampling.model_dump_json()}"
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def _ends_with_newline(path: Path) -> bool:
    if path.stat().st_size == 0:
        return True
    with path.open("rb") as f:
        f.seek(-1, 2)
        return f.read(1) == b"\n"


def _read(cache: Path) -> Iterator[Completion]:
    if not cache.is_file():
        return
    for line in cache.read_text(encoding="utf-8").splitlines():
        try:
            yield Completion(**json.loads(line))
        except (ValueError, TypeError):
            continue  # a line cut short by an interruption
