"""Text helpers for the dataset: normalisation and near-duplicate detection."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable

_NON_WORD = re.compile(r"[\W_]+")


def normalise(text: str) -> str:
    """Canonical form used for deduplication and the split: NFKC, casefolded, punctuation dropped."""
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def shingles(text: str, size: int = 3) -> set[tuple[str, ...]]:
    """Word n-grams of the normalised text (the whole text if it is shorter than ``size`` words)."""
    words = normalise(text).split()
    if len(words) < size:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}


class NearDuplicateIndex:
    """Finds texts that contain most of one of the indexed texts (word 3-gram containment)."""

    def __init__(self, texts: Iterable[str], *, threshold: float = 0.7) -> None:
        self.threshold = threshold
        self._sizes: list[int] = []
        self._postings: dict[tuple[str, ...], list[int]] = {}
        for text in texts:
            grams = shingles(text)
            if not grams:
                continue
            index = len(self._sizes)
            self._sizes.append(len(grams))
            for gram in grams:
                self._postings.setdefault(gram, []).append(index)

    def matches(self, text: str) -> bool:
        """True if ``text`` contains at least ``threshold`` of the 3-grams of some indexed text."""
        return any(count >= self.threshold * self._sizes[index] for index, count in self._hits(shingles(text)).items())

    def overlaps(self, text: str) -> bool:
        """True if ``text`` and some indexed text share at least ``threshold`` of the 3-grams of the shorter one."""
        grams = shingles(text)
        return any(
            count >= self.threshold * min(self._sizes[index], len(grams)) for index, count in self._hits(grams).items()
        )

    def _hits(self, grams: set[tuple[str, ...]]) -> Counter[int]:
        hits: Counter[int] = Counter()
        for gram in grams:
            hits.update(self._postings.get(gram, ()))
        return hits
