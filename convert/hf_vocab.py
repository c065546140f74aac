"""The tokenizer of a Hugging Face checkpoint as GGUF tokenizer metadata (byte-level BPE).

``tokenizer.ggml.pre`` tells llama.cpp which pre-tokenizer regex to split text with before BPE.
llama.cpp's own converter finds it by hashing the tokenization of a fixed test string and
looking the hash up in a table of known models; that only recognises the exact published
tokenizers (not a fine-tuned or re-trained one, nor the tiny ones the tests build) and needs the
HF tokenizer at conversion time. Here the choice is made from the pre-tokenizer that
``tokenizer.json`` declares: a table keyed on its structure and split regex
(:data:`PRE_TOKENIZERS`), which maps every variant to the llama.cpp pre type whose regex splits
text the same way. Unknown pre-tokenizers are refused; ``--tokenizer-pre`` overrides the choice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import SpecialVocab, TokenType

from rfsdk.errors import ConversionError

RF_TEXT = "<rf>"

_QWEN2_RE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_RE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

PRE_TOKENIZERS: dict[tuple[tuple[Any, ...], ...], str] = {
    (("split", _QWEN2_RE), ("byte_level", False, False)): "qwen2",
    (("split", _LLAMA3_RE), ("byte_level", False, False)): "llama-bpe",
    (("digits", True), ("byte_level", False, True)): "smollm",
    (("byte_level", False, True),): "gpt-2",
}
"""Normalised tokenizer.json pre_tokenizer -> llama.cpp ``tokenizer.ggml.pre`` with the same splits.

``qwen2``: Qwen2/2.5 (single digits); ``llama-bpe``: Llama 3 (digits in groups of up to three);
``smollm``: SmolLM/SmolLM2 and StarCoder (single digits, then the GPT-2 regex); ``gpt-2``: plain
GPT-2 byte-level.
"""

KNOWN_PRE = ("default", "gpt-2", "llama-bpe", "qwen2", "smollm")


@dataclass(frozen=True)
class HfVocab:
    """Everything the GGUF tokenizer metadata needs."""

    pre: str
    tokens: list[str]
    types: list[int]
    merges: list[str]
    special_ids: dict[str, int]
    add_special: dict[str, bool]
    chat_template: str | list[dict[str, str]] | None
    rf_id: int | None
    n_padded: int


def load_vocab(src: Path, n_vocab: int, *, pre: str | None = None, require_rf: bool = True) -> HfVocab:
    """The tokenizer of checkpoint folder ``src`` laid out over ``n_vocab`` embedding rows."""
    path = src / "tokenizer.json"
    if not path.is_file():
        if (src / "tokenizer.model").is_file():
            raise ConversionError(
                f"{src} has only a SentencePiece tokenizer.model; rf-convert hf reads byte-level BPE "
                "tokenizers from tokenizer.json. Save the tokenizer with a fast tokenizer "
                "(AutoTokenizer.from_pretrained(...).save_pretrained(SRC)) or use llama.cpp's converter."
            )
        raise ConversionError(
            f"no tokenizer in {src}: tokenizer.json is missing. Copy the tokenizer files "
            "(tokenizer.json, tokenizer_config.json) of the model into the folder, or save them with "
            "tokenizer.save_pretrained(SRC)."
        )
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{path} is not valid JSON ({exc}). Save the tokenizer again.") from exc
    model = spec.get("model") if isinstance(spec, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        kind = model.get("type") if isinstance(model, dict) else None
        raise ConversionError(
            f"{path} holds a {kind or 'unknown'} tokenizer; rf-convert hf supports byte-level BPE "
            "tokenizers (Llama 3, Qwen2, SmolLM2, Mistral-Nemo style) only."
        )
    if model.get("byte_fallback"):
        raise ConversionError(
            f"{path} is a SentencePiece-style BPE tokenizer (byte_fallback); these (Llama 2, Mistral 7B "
            "v0.1) are not supported yet by rf-convert hf. Use llama.cpp's converter, then rf-convert patch."
        )
    chosen_pre = pre or detect_pre(spec, path)

    texts: dict[int, str] = {int(i): t for t, i in model["vocab"].items()}
    added: dict[int, dict[str, Any]] = {}
    for entry in spec.get("added_tokens") or []:
        added[int(entry["id"])] = entry
        texts[int(entry["id"])] = entry["content"]
    n_tok = max(texts) + 1 if texts else 0
    if n_tok > n_vocab:
        raise ConversionError(
            f"the tokenizer has {n_tok} tokens (ids up to {n_tok - 1}) but the model's embedding has only "
            f"{n_vocab} rows (config vocab_size). After adding tokens, resize the embeddings "
            "(model.resize_token_embeddings(len(tokenizer))) and save the model again."
        )
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        if i not in texts:
            tokens.append(f"[PAD{i}]")
            types.append(int(TokenType.UNUSED))
            continue
        text = texts[i]
        tokens.append(text)
        if i in added:
            special = bool(added[i].get("special")) or (text.startswith("<|") and text.endswith("|>"))
            types.append(int(TokenType.CONTROL if special else TokenType.USER_DEFINED))
        else:
            types.append(int(TokenType.NORMAL))

    rf_id = _rf_id(path, texts, added, require_rf)
    special = SpecialVocab(src, load_merges=True, n_vocab=n_vocab)
    if not special.merges:
        raise ConversionError(f"{path} has no BPE merges; the tokenizer file is incomplete. Save it again.")
    return HfVocab(
        pre=chosen_pre,
        tokens=tokens,
        types=types,
        merges=list(special.merges),
        special_ids=dict(special.special_token_ids),
        add_special=dict(special.add_special_token),
        chat_template=special.chat_template,  # type: ignore[arg-type]
        rf_id=rf_id,
        n_padded=n_vocab - len(texts),
    )


def detect_pre(spec: dict[str, Any], path: Path) -> str:
    """The llama.cpp pre-tokenizer name for the ``pre_tokenizer`` that tokenizer.json ``spec`` declares."""
    signature = _signature(spec.get("pre_tokenizer"))
    found = PRE_TOKENIZERS.get(signature) if signature is not None else None
    if found is None:
        raise ConversionError(
            f"{path} uses a pre-tokenizer that rf-convert hf does not recognise "
            f"({json.dumps(spec.get('pre_tokenizer'))[:300]}). If you know which llama.cpp pre-tokenizer "
            f"splits text the same way, pass --tokenizer-pre NAME (e.g. {', '.join(KNOWN_PRE)})."
        )
    return found


def _signature(pre: Any) -> tuple[tuple[Any, ...], ...] | None:
    if not isinstance(pre, dict):
        return None
    kind = pre.get("type")
    if kind == "Sequence":
        parts = [_signature(p) for p in pre.get("pretokenizers") or []]
        if any(p is None for p in parts):
            return None
        return tuple(item for p in parts for item in p)  # type: ignore[union-attr]
    if kind == "Split":
        pattern = pre.get("pattern") or {}
        if pre.get("invert") or pre.get("behavior") != "Isolated" or "Regex" not in pattern:
            return None
        return (("split", pattern["Regex"]),)
    if kind == "ByteLevel":
        return (("byte_level", bool(pre.get("add_prefix_space")), bool(pre.get("use_regex", True))),)
    if kind == "Digits":
        return (("digits", bool(pre.get("individual_digits"))),)
    return None


def _rf_id(path: Path, texts: dict[int, str], added: dict[int, dict[str, Any]], require: bool) -> int | None:
    ids = [i for i, text in texts.items() if text == RF_TEXT]
    if not ids:
        if require:
            raise ConversionError(
                f"the tokenizer in {path.parent} has no {RF_TEXT} token, so the converted model could not "
                f"be guarded. Convert the fine-tuned checkpoint that has {RF_TEXT} "
                f"(tokenizer.add_special_tokens({{'additional_special_tokens': ['{RF_TEXT}']}})), or pass "
                "--no-rf to convert a model without it."
            )
        return None
    token_id = ids[0]
    if token_id not in added or not added[token_id].get("special"):
        raise ConversionError(
            f"{RF_TEXT} (id {token_id}) is in the tokenizer but not as a special added token, so ordinary "
            f"text could produce it. Add it with tokenizer.add_special_tokens(...) (special=True) and "
            "save the tokenizer again."
        )
    return token_id
