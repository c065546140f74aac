"""The tokenizer of a Hugging Face checkpoint as GGUF tokenizer metadata (byte-level BPE or SentencePiece).

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

from .spm_model import BPE_MODEL_TYPE, SpModel, read_spm_model

RF_TEXT = "<rf>"
SPM_SPACE = "\u2581"
"""The character SentencePiece writes for a space."""
ADDED_SCORE = -1000.0
"""Score of added and padding tokens (what llama.cpp's converter gives them)."""
_KEPT_TYPES = frozenset({int(TokenType.UNKNOWN), int(TokenType.CONTROL), int(TokenType.BYTE)})

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

    model: str  # tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    pre: str
    tokens: list[str]
    types: list[int]
    scores: list[float] | None
    merges: list[str]
    special_ids: dict[str, int]
    add_special: dict[str, bool]
    add_space_prefix: bool | None
    chat_template: str | list[dict[str, str]] | None
    rf_id: int | None
    n_padded: int


def load_vocab(src: Path, n_vocab: int, *, pre: str | None = None, require_rf: bool = True) -> HfVocab:
    """The tokenizer of checkpoint folder ``src`` laid out over ``n_vocab`` embedding rows.

    A byte-level BPE ``tokenizer.json`` is used as it is; otherwise the SentencePiece
    ``tokenizer.model`` (with the added tokens of tokenizer.json or tokenizer_config.json).
    """
    json_path, spm_path = src / "tokenizer.json", src / "tokenizer.model"
    spec = _read_json(json_path) if json_path.is_file() else None
    model = spec.get("model") if isinstance(spec, dict) else None
    kind = model.get("type") if isinstance(model, dict) else None
    if kind == "BPE" and isinstance(model, dict) and not model.get("byte_fallback"):
        assert spec is not None
        return _bpe_vocab(src, spec, n_vocab, pre, require_rf)
    if spm_path.is_file():
        added = _added_tokens(spec) if spec is not None else _config_added_tokens(src)
        return _spm_vocab(src, read_spm_model(spm_path), added, n_vocab, require_rf)
    if spec is None:
        raise ConversionError(
            f"no tokenizer in {src}: tokenizer.json (or a SentencePiece tokenizer.model) is missing. Copy "
            "the tokenizer files of the model into the folder, or save them with tokenizer.save_pretrained(SRC)."
        )
    if kind == "BPE":
        raise ConversionError(
            f"{json_path} is a SentencePiece-style BPE tokenizer (byte_fallback), whose scores only "
            f"tokenizer.model has, and {src} lacks it. Copy tokenizer.model from the original checkpoint."
        )
    raise ConversionError(
        f"{json_path} holds a {kind or 'unknown'} tokenizer; rf-convert hf supports byte-level BPE "
        "tokenizers (tokenizer.json) and SentencePiece BPE tokenizers (tokenizer.model)."
    )


def _bpe_vocab(src: Path, spec: dict[str, Any], n_vocab: int, pre: str | None, require_rf: bool) -> HfVocab:
    path = src / "tokenizer.json"
    vocab = spec["model"].get("vocab")
    if not isinstance(vocab, dict):
        raise ConversionError(f"{path} has no BPE vocabulary; the tokenizer file is incomplete. Save it again.")
    chosen_pre = pre or detect_pre(spec, path)
    base = {int(i): (t, 0.0, int(TokenType.NORMAL)) for t, i in vocab.items()}
    added = _added_tokens(spec)
    tokens, types, _, n_padded = _layout(path, base, added, n_vocab, spm=False)
    special = SpecialVocab(src, load_merges=True, n_vocab=n_vocab)
    if not special.merges:
        raise ConversionError(f"{path} has no BPE merges; the tokenizer file is incomplete. Save it again.")
    return HfVocab(
        model="gpt2",
        pre=chosen_pre,
        tokens=tokens,
        types=types,
        scores=None,
        merges=list(special.merges),
        special_ids=dict(special.special_token_ids),
        add_special=dict(special.add_special_token),
        add_space_prefix=None,
        chat_template=special.chat_template,  # type: ignore[arg-type]
        rf_id=_rf_id(path, tokens, added, require_rf),
        n_padded=n_padded,
    )


def _spm_vocab(
    src: Path, sp: SpModel, added: dict[int, dict[str, Any]], n_vocab: int, require_rf: bool
) -> HfVocab:
    path = src / "tokenizer.model"
    if sp.model_type != BPE_MODEL_TYPE:
        raise ConversionError(
            f"{path} is a {sp.model_type_name} SentencePiece model; llama.cpp tokenizes SentencePiece "
            "models by BPE merges, so only BPE models (Llama 2, Mistral 7B) convert exactly."
        )
    base = {i: (p.text, p.score, p.type) for i, p in enumerate(sp.pieces)}
    tokens, types, scores, n_padded = _layout(path, base, added, n_vocab, spm=True)
    special = SpecialVocab(src, load_merges=False, n_vocab=n_vocab)
    config = _read_json(src / "tokenizer_config.json") if (src / "tokenizer_config.json").is_file() else {}
    prefix = config.get("add_prefix_space") if isinstance(config, dict) else None
    return HfVocab(
        model="llama",
        pre="default",
        tokens=tokens,
        types=types,
        scores=scores,
        merges=[],
        special_ids=dict(special.special_token_ids),
        add_special=dict(special.add_special_token),
        add_space_prefix=prefix if isinstance(prefix, bool) else sp.add_dummy_prefix,
        chat_template=special.chat_template,  # type: ignore[arg-type]
        rf_id=_rf_id(src / "tokenizer.json", tokens, added, require_rf),
        n_padded=n_padded,
    )


def _layout(
    path: Path,
    base: dict[int, tuple[str, float, int]],
    added: dict[int, dict[str, Any]],
    n_vocab: int,
    *,
    spm: bool,
) -> tuple[list[str], list[int], list[float], int]:
    """Token texts, types and scores over ``n_vocab`` rows; rows no token uses become UNUSED [PADi]."""
    ids = set(base) | set(added)
    n_tok = max(ids) + 1 if ids else 0
    if n_tok > n_vocab:
        raise ConversionError(
            f"the tokenizer ({path.name}) has {n_tok} tokens (ids up to {n_tok - 1}) but the model's "
            f"embedding has only {n_vocab} rows (config vocab_size). After adding tokens, resize the "
            "embeddings (model.resize_token_embeddings(len(tokenizer))) and save the model again."
        )
    tokens, types, scores = [], [], []
    for i in range(n_vocab):
        text, score, kind = base.get(i, (f"[PAD{i}]", ADDED_SCORE, int(TokenType.UNUSED)))
        entry = added.get(i)
        if entry is not None:
            text, score = str(entry["content"]), ADDED_SCORE
            if kind not in _KEPT_TYPES:
                kind = int(TokenType.CONTROL if _is_special(entry) else TokenType.USER_DEFINED)
            if spm and kind == TokenType.USER_DEFINED:
                text = text.replace(SPM_SPACE, " ")  # llama.cpp matches user-defined text before spaces become ▁
        tokens.append(text)
        types.append(kind)
        scores.append(score)
    return tokens, types, scores, n_vocab - len(ids)


def _is_special(entry: dict[str, Any]) -> bool:
    text = str(entry.get("content"))
    return bool(entry.get("special")) or (text.startswith("<|") and text.endswith("|>"))


def _added_tokens(spec: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {int(e["id"]): e for e in spec.get("added_tokens") or [] if isinstance(e, dict) and "id" in e}


def _config_added_tokens(src: Path) -> dict[int, dict[str, Any]]:
    path = src / "tokenizer_config.json"
    config = _read_json(path) if path.is_file() else {}
    decoder = config.get("added_tokens_decoder") if isinstance(config, dict) else None
    if not isinstance(decoder, dict):
        return {}
    return {int(i): e for i, e in decoder.items() if isinstance(e, dict) and "content" in e}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{path} is not valid JSON ({exc}). Save the tokenizer again.") from exc


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


def _rf_id(path: Path, tokens: list[str], added: dict[int, dict[str, Any]], require: bool) -> int | None:
    ids = [i for i, text in enumerate(tokens) if text == RF_TEXT]
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
