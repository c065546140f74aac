"""Tokenizer details transformers has no API for: a token's special role, and renaming a token in saved files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rfsdk.errors import ConversionError

_SIDE_FILES = ("tokenizer_config.json", "special_tokens_map.json")
_ROLES = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


def special_role(tokenizer, token: str) -> str | None:
    """The role (``"eos_token"``, ...) that ``token`` has in ``tokenizer``, or None."""
    return next((role for role in _ROLES if getattr(tokenizer, role, None) == token), None)


def rename_special_token(folder: Path, old: str, new: str, token_id: int) -> None:
    """Rename token ``token_id`` from ``old`` to ``new`` in the tokenizer saved in ``folder``, as a special token.

    The id and everything else stay; the result is reloaded and checked, so a tokenizer
    format this does not understand fails here with a clear error instead of later.
    """
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise ConversionError(
            f"the base's tokenizer saves no tokenizer.json, so its token {old!r} cannot be renamed to "
            f"{new}. Use rf-convert patch on the base GGUF instead."
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    _mark_added(data, new, token_id)
    _rename_in_model_vocab(data.get("model") or {}, old, new, token_id)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    for name in _SIDE_FILES:
        side = folder / name
        if side.is_file():
            config = json.loads(side.read_text(encoding="utf-8"))
            side.write_text(json.dumps(_replace_text(config, old, new), ensure_ascii=False, indent=2), encoding="utf-8")
    _check_renamed(folder, old, new, token_id)


def _mark_added(data: dict[str, Any], new: str, token_id: int) -> None:
    added = data.setdefault("added_tokens", [])
    for entry in added:
        if entry.get("id") == token_id:
            entry.update(content=new, special=True, normalized=False)
            return
    added.append(
        {"id": token_id, "content": new, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
    )


def _rename_in_model_vocab(model: dict[str, Any], old: str, new: str, token_id: int) -> None:
    vocab = model.get("vocab")
    if isinstance(vocab, dict) and vocab.get(old) == token_id:
        vocab[new] = vocab.pop(old)
    elif isinstance(vocab, list) and token_id < len(vocab) and vocab[token_id][0] == old:
        vocab[token_id][0] = new  # unigram: [text, score] rows by id


def _replace_text(value: Any, old: str, new: str) -> Any:
    if isinstance(value, dict):
        return {key: value[key] if key == "chat_template" else _replace_text(value[key], old, new) for key in value}
    if isinstance(value, list):
        return [_replace_text(item, old, new) for item in value]
    return new if value == old else value


def _check_renamed(folder: Path, old: str, new: str, token_id: int) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    encoded = tokenizer.encode(new, add_special_tokens=False)
    if tokenizer.convert_tokens_to_ids(new) != token_id or encoded != [token_id]:
        raise ConversionError(
            f"renaming token {token_id} from {old!r} to {new} did not take (the reloaded tokenizer "
            f"encodes {new} as {encoded}). Use rf-convert patch on the base GGUF instead."
        )
