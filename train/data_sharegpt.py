"""Benign chats from the (truncated, unfiltered) ShareGPT JSON file: incremental reading and a harm screen."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from .data_packages import SHAREGPT
from .data_schema import Example, Turn
from .data_sources import Source
from .data_text import NearDuplicateIndex

_CHUNK = 1 << 20
_SPACE = " \t\r\n"
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant", "bing": "assistant",
          "bard": "assistant", "assistant": "assistant"}
HARMFUL_PATTERNS = (
    r"\b(pipe ?bombs?|molotov|improvised explosive|napalm|nerve agents?|sarin|ricin|anthrax|bioweapons?)\b",
    r"\b(make|build|assemble|synthesi[sz]e|manufacture|cook)\b.{0,40}\b(bombs?|explosives?|meth|methamphetamine|"
    r"fentanyl|heroin|cocaine|poisons?|guns?|silencers?)\b",
    r"\b(child porn\w*|csam|underage (girls?|boys?|sex)|sex with (a )?minors?|lolita|pedophil\w*)\b",
    r"\b(porn\w*|nsfw|erotic\w*|sexually explicit|hentai|nudes?|naked|orgasm\w*|fetish\w*|bdsm)\b",
    r"\b(kill|murder|poison|stab|shoot|torture|kidnap)\w* (my|him|her|them|someone|somebody|people|a person)\b",
    r"\b(suicid\w*|self[- ]harm\w*|kill(ing)? myself|cut(ting)? myself)\b",
    r"\b(rap(e|ed|ing|ist)|molest\w*|incest)\b",
    r"\b(jailbreak\w*|do anything now|developer mode|ignore (all )?(the )?(previous|prior|above) instructions|"
    r"dan mode|no (ethical|moral) (guidelines|restrictions|limits)|unfiltered and amoral)\b",
    r"\b(malware|ransomware|keyloggers?|botnets?|ddos|phishing|steal\w* (passwords?|credentials|credit cards?)|"
    r"hack(ing)? into)\b",
    r"\b(terroris\w*|genocide|ethnic cleansing|white supremac\w*|nazis?|hitler)\b",
)


class JsonArrayReader:
    """Iterates over the items of a top-level JSON array read in chunks, stopping cleanly at a truncation.

    After iteration, ``truncated`` says whether the array ended early (the last, partial item is dropped).
    """

    def __init__(self, stream: TextIO, *, chunk_size: int = _CHUNK) -> None:
        self._stream = stream
        self._chunk_size = chunk_size
        self._decoder = json.JSONDecoder()
        self.truncated = False

    def __iter__(self) -> Iterator[Any]:
        buffer, pos, eof = "", 0, False

        def refill() -> None:
            nonlocal buffer, pos, eof
            chunk = self._stream.read(self._chunk_size)
            eof = not chunk
            buffer, pos = buffer[pos:] + chunk, 0

        def skip(chars: str) -> str:
            """Skip ``chars`` and return the next character ("" at the end of the input)."""
            nonlocal pos
            while True:
                while pos < len(buffer) and buffer[pos] in chars:
                    pos += 1
                if pos < len(buffer) or eof:
                    return buffer[pos : pos + 1]
                refill()

        if skip(_SPACE) != "[":
            raise ValueError("the JSON input does not start with an array")
        pos += 1
        expect_item = True
        while True:
            char = skip(_SPACE)
            if char == "":
                self.truncated = True
                return
            if char == "]":
                return
            if not expect_item:
                if char != ",":
                    raise ValueError(f"expected ',' or ']' between array items, found {char!r}")
                pos += 1
                expect_item = True
                continue
            try:
                item, end = self._decoder.raw_decode(buffer, pos)
            except json.JSONDecodeError:
                if eof:
                    self.truncated = True
                    return
                refill()
                continue
            if end == len(buffer) and not eof:  # a number or literal may go on in the next chunk
                refill()
                continue
            pos = end
            expect_item = False
            yield item


class HarmScreen:
    """Rejects chats that mention harmful topics (keyword patterns) or near-duplicate a known harmful prompt."""

    def __init__(self, harmful_prompts: list[str]) -> None:
        self._pattern = re.compile("|".join(HARMFUL_PATTERNS), re.IGNORECASE)
        self._near = NearDuplicateIndex(harmful_prompts)

    def reason(self, turns: tuple[Turn, ...]) -> str | None:
        """``"keyword"`` or ``"near_duplicate"`` if the chat is rejected, else None."""
        if any(self._pattern.search(turn.content) for turn in turns):
            return "keyword"
        if any(self._near.matches(turn.content) for turn in turns if turn.role == "user"):
            return "near_duplicate"
        return None


def chat_turns(record: dict[str, Any]) -> tuple[Turn, ...] | None:
    """The turns of a ShareGPT record, or None unless it is a user-first, alternating chat with a reply."""
    turns: list[Turn] = []
    for message in record.get("conversations") or ():
        role = _ROLES.get(message.get("from", ""))
        content = (message.get("value") or "").strip()
        if role is None or not content:
            continue
        if turns and turns[-1].role == role:
            return None
        turns.append(Turn(role=role, content=content))
    if len(turns) < 2 or turns[0].role != "user":
        return None
    return tuple(turns)


def _read_sharegpt(
    name: str, paths: list[Path], *, screen: HarmScreen, limit: int | None = None, counts: dict[str, int]
) -> Iterator[Example]:
    kept = 0
    with paths[0].open(encoding="utf-8") as handle:
        reader = JsonArrayReader(handle)
        for record in reader:
            if limit is not None and kept >= limit:
                break
            counts["records"] = counts.get("records", 0) + 1
            turns = chat_turns(record)
            reason = "not_a_chat" if turns is None else screen.reason(turns)
            if reason is not None:
                counts[f"screened_{reason}"] = counts.get(f"screened_{reason}", 0) + 1
                continue
            assert turns is not None  # no reason to skip: a chat
            kept += 1
            yield Example.create(
                source=name, prompt=turns[0].content, answer=turns[1].content,
                label="benign", kind="benign_chat", turns=turns,
            )
    counts["truncated"] = int(reader.truncated)


SHAREGPT_SOURCE = Source(
    "sharegpt", SHAREGPT, ("data/ShareGPT_V3_unfiltered_cleaned_split.json",),
    "ShareGPT V3 unfiltered cleaned split, no licence stated", _read_sharegpt,
)
