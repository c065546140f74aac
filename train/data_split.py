"""The train/validation/test split by prompt, its JSON manifest, and the guarded Dataset."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from rfsdk.errors import RfsdkError

from .data_schema import Example, SourceInfo
from .data_text import normalise

SplitName = Literal["train", "validation", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "validation", "test")
_SALT = "rfsdk-split-v1\x1f"


class SplitGuardError(RfsdkError, PermissionError):
    """Test examples were requested without saying that the caller is evaluating, not training."""


class SplitLeakError(RfsdkError, ValueError):
    """A prompt appears in more than one split, or the manifest does not match the examples."""


class SplitRatios(BaseModel):
    """Fractions of prompts in each split (they must add up to 1)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1

    @model_validator(mode="after")
    def _check(self) -> SplitRatios:
        values = (self.train, self.validation, self.test)
        if min(values) < 0 or abs(sum(values) - 1) > 1e-9:
            raise ValueError(f"split ratios must be non-negative and add up to 1, got {values}")
        return self


def split_of(prompt: str, ratios: SplitRatios) -> SplitName:
    """The split of a prompt: a hash of its normalised text, so it is the same across sources and runs."""
    digest = hashlib.sha256((_SALT + normalise(prompt)).encode("utf-8")).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    if point < ratios.train:
        return "train"
    if point < ratios.train + ratios.validation:
        return "validation"
    return "test"


class Manifest(BaseModel):
    """What a built dataset holds: the ratios, the example ids of each split, and the sources."""

    model_config = ConfigDict(extra="forbid")

    format: int = 1
    ratios: SplitRatios
    sharegpt_limit: int | None = None
    source_ratios: dict[str, SplitRatios] = {}
    """Sources split with other ratios than ``ratios`` (the generated suites)."""
    splits: dict[SplitName, list[str]]
    sources: list[SourceInfo]

    @classmethod
    def create(
        cls,
        examples: Iterable[Example],
        ratios: SplitRatios,
        sources: list[SourceInfo],
        sharegpt_limit: int | None = None,
        source_ratios: dict[str, SplitRatios] | None = None,
    ) -> Manifest:
        """Assign every example to the split of its prompt (with its source's ratios where ``source_ratios`` has them)."""
        source_ratios = source_ratios or {}
        splits: dict[SplitName, list[str]] = {name: [] for name in SPLITS}
        for example in examples:
            splits[split_of(example.prompt, source_ratios.get(example.source, ratios))].append(example.id)
        return cls(ratios=ratios, sharegpt_limit=sharegpt_limit, source_ratios=source_ratios, splits=splits,
                   sources=sources)


class Dataset:
    """Examples and their split. ``split("test")`` refuses unless the caller says it is evaluating."""

    def __init__(self, examples: Sequence[Example], manifest: Manifest) -> None:
        by_id = {example.id: example for example in examples}
        if len(by_id) != len(examples):
            raise SplitLeakError("the dataset has duplicate example ids; rebuild it")
        listed = [i for name in SPLITS for i in manifest.splits.get(name, [])]
        if len(listed) != len(set(listed)) or set(listed) != set(by_id):
            raise SplitLeakError("the split manifest does not list each example exactly once; rebuild the dataset")
        self.manifest = manifest
        self._splits = {name: [by_id[i] for i in manifest.splits.get(name, [])] for name in SPLITS}
        prompts: dict[str, set[str]] = {name: {normalise(e.prompt) for e in self._splits[name]} for name in SPLITS}
        for first, second in (("train", "test"), ("train", "validation"), ("validation", "test")):
            shared = prompts[first] & prompts[second]
            if shared:
                raise SplitLeakError(
                    f"{len(shared)} prompt(s) are in both {first} and {second}, e.g. {sorted(shared)[0]!r}; "
                    "rebuild the dataset"
                )

    def split(self, name: SplitName, *, evaluation: bool = False) -> list[Example]:
        """Examples of one split; ``"test"`` needs ``evaluation=True`` so training code cannot see it by accident."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; use one of {', '.join(SPLITS)}")
        if name == "test" and not evaluation:
            raise SplitGuardError(
                "The test split is held out from training. Use split('train') or split('validation'); "
                "final evaluation code may call split('test', evaluation=True)."
            )
        return list(self._splits[name])

    def prompts(self, name: SplitName) -> list[str]:
        """The prompt of every example of one split (not ``"test"``)."""
        return [e.prompt for e in self.split(name)]

    def counts(self) -> Counter[tuple[str, str, str]]:
        """Number of examples per (source, label, split)."""
        return Counter((e.source, e.label, name) for name in SPLITS for e in self._splits[name])

    def kind_counts(self) -> Counter[tuple[str, str]]:
        """Number of examples per (kind, split)."""
        return Counter((e.kind, name) for name in SPLITS for e in self._splits[name])
