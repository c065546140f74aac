"""Hashed word and character n-gram features of a conversation, with numpy only.

The prompt and the reply are featurised in separate namespaces (so "how to make
a weapon" counts differently as a request and as an answer): lowercased word
unigrams and bigrams, and character 3-, 4- and 5-grams, each hashed into
``2**DIM_BITS`` buckets, weighted ``1 + log(count)`` and L2-normalised per
namespace. The hashes are fixed (CRC-32 and a 64-bit polynomial hash), so features
are the same in every process.
"""

from __future__ import annotations

import re
import zlib
from typing import Sequence

import numpy as np

DIM_BITS = 18
DIM = 1 << DIM_BITS
CHAR_SIZES = (3, 4, 5)
MAX_CHARS = 4000
"""Longer texts keep their first and last ``MAX_CHARS // 2`` characters."""
FORMAT = 1
"""Version of the feature definition; saved weights record it."""

_WORD = re.compile(r"\w+")
_PRIME = np.uint64(1099511628211)
_MIX = np.uint64(0xFF51AFD7ED558CCD)
_SHIFT = np.uint64(33)


class SparseRows:
    """Feature rows in CSR form: row ``i`` is ``indices[indptr[i]:indptr[i+1]]`` with its ``values``."""

    def __init__(self, indices: np.ndarray, values: np.ndarray, indptr: np.ndarray) -> None:
        self.indices = indices
        self.values = values
        self.indptr = indptr

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def row_ids(self) -> np.ndarray:
        """The row of each stored value."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.indptr))

    def dot(self, weights: np.ndarray) -> np.ndarray:
        """``X @ weights`` for a dense weight vector."""
        products = weights[self.indices].astype(np.float64) * self.values
        return np.bincount(self.row_ids(), weights=products, minlength=len(self))


def _clip(text: str) -> str:
    text = " ".join(text.lower().split())
    if len(text) > MAX_CHARS:
        half = MAX_CHARS // 2
        text = text[:half] + " " + text[-half:]
    return text


def _char_hashes(text: str, namespace: int) -> list[np.ndarray]:
    codes = np.frombuffer(f" {text} ".encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    out = []
    for n in CHAR_SIZES:
        count = len(codes) - n + 1
        if count <= 0:
            continue
        h = np.full(count, namespace * 31 + n, dtype=np.uint64)
        for k in range(n):
            h = h * _PRIME + codes[k : k + count]
        out.append(h)
    return out


def _word_hashes(text: str, namespace: int) -> np.ndarray:
    words = _WORD.findall(text)
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    return np.fromiter(
        (zlib.crc32(gram.encode("utf-8"), namespace) for gram in grams), dtype=np.uint64, count=len(grams)
    )


def _buckets(hashes: np.ndarray) -> np.ndarray:
    h = hashes ^ (hashes >> _SHIFT)
    h = h * _MIX
    h ^= h >> _SHIFT
    return (h & np.uint64(DIM - 1)).astype(np.int64)


def _namespace(text: str, namespace: int) -> tuple[np.ndarray, np.ndarray]:
    text = _clip(text)
    if not text:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    parts = [*_char_hashes(text, namespace), _word_hashes(text, namespace), np.array([namespace], np.uint64)]
    buckets, counts = np.unique(_buckets(np.concatenate(parts)), return_counts=True)
    values = 1.0 + np.log(counts)
    values /= np.sqrt((values**2).sum())
    return buckets, values.astype(np.float32)


def featurize(pairs: Sequence[tuple[str, str]]) -> SparseRows:
    """Feature rows of (prompt, reply) pairs; a reply of "" adds no reply features."""
    indices, values, indptr = [], [], [0]
    for prompt, reply in pairs:
        row_i, row_v = [], []
        for namespace, text in ((1, prompt), (2, reply)):
            i, v = _namespace(text, namespace)
            row_i.append(i)
            row_v.append(v)
        indices.extend(row_i)
        values.extend(row_v)
        indptr.append(indptr[-1] + sum(len(i) for i in row_i))
    return SparseRows(
        np.concatenate(indices) if indices else np.empty(0, np.int64),
        np.concatenate(values) if values else np.empty(0, np.float32),
        np.asarray(indptr, dtype=np.int64),
    )
