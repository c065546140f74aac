"""Merge an rfsdk adapter into a full Hugging Face checkpoint that ``rf-convert hf`` converts."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from rfsdk.convert.adapter import Adapter, load_adapter
from rfsdk.convert.hf_vocab import RF_TEXT
from rfsdk.errors import ConversionError

from .base import check_trained_on, load_base
from .tokenizer_files import rename_special_token, special_role

_PEFT_PREFIX = "base_model.model."


def merge_into_checkpoint(adapter: Path, base: Path, out: Path, *, max_shard_size: str = "2GB") -> tuple[int, str | None]:
    """Write folder ``out``: ``base`` plus ``<rf>`` as a special token and the merged LoRA.

    The LoRA is added at the adapter's scale (its ``lora_strength`` and per-pair weights included); the <rf>
    row(s) come from the adapter; ``rf_config.json`` records its threshold. Returns the
    id of <rf> and the adapter's slot. ``base`` is a checkpoint folder or a GGUF (dequantized to float32). An
    adapter trained on a ``slot`` keeps that token's id, renamed to <rf> as ``rf-convert patch`` does.
    The weights are merged in float32 and saved in the base's own dtype (a bfloat16 checkpoint stays
    bfloat16), as safetensors shards of at most ``max_shard_size``.
    """
    if out.exists() and any(out.iterdir()):
        raise ConversionError(f"{out} exists and is not empty; pick a new folder so nothing there is overwritten.")
    rf = load_adapter(adapter)
    check_trained_on(adapter, rf, base)
    if rf.metadata.rf_token != RF_TEXT:
        raise ConversionError(
            f"{adapter} names its token {rf.metadata.rf_token!r}; rf-convert hf finds the token as {RF_TEXT}. "
            "Use rf-convert patch on the base GGUF to assemble it."
        )
    model, tokenizer, rf_id = merged_model(rf, base)
    slot = rf.metadata.slot
    role = None if slot is None else special_role(tokenizer, slot)
    if role is not None:
        raise ConversionError(
            f"the adapter's slot {slot!r} is the tokenizer's {role}; renaming it to {RF_TEXT} would break the "
            "tokenizer. Train on an unused reserved token instead."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))  # out appears only when complete
    try:
        model.save_pretrained(partial, max_shard_size=max_shard_size)
        tokenizer.save_pretrained(partial)
        if slot is not None:
            rename_special_token(partial, slot, RF_TEXT, rf_id)
        if rf.metadata.rf_threshold is not None:  # an uncalibrated adapter: the converted model stores no threshold
            (partial / "rf_config.json").write_text(json.dumps({"threshold": rf.metadata.rf_threshold}) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return rf_id, slot


def stored_dtype(base: Path) -> str:
    """The dtype ``base`` keeps its weights in: its config's for a checkpoint folder, float32 for a (dequantized) GGUF."""
    config = base / "config.json"
    if base.is_dir() and config.is_file():
        settings = json.loads(config.read_text(encoding="utf-8"))
        name = settings.get("dtype") or settings.get("torch_dtype")
        if name in ("bfloat16", "float16"):
            return name
    return "float32"


def merged_model(rf: Adapter, base: Path):
    """(model, tokenizer, <rf> id): ``base`` with the adapter ``rf`` merged, as ``merge_into_checkpoint`` saves it.

    Merged in float32, then cast to the base's :func:`stored_dtype`.

    The <rf> token is added, or with an adapter trained on a ``slot`` that existing token takes its rows.
    """
    import torch

    model, tokenizer = load_base(base)
    token, vocab = rf.metadata.slot or rf.metadata.rf_token, tokenizer.get_vocab()
    if (token in vocab) != (rf.metadata.slot is not None):
        problem = f"already has {token}" if token in vocab else f"has no token {token!r}, the adapter's slot"
        raise ConversionError(f"{base} {problem}; merge into the base the adapter was trained on.")
    embeddings = model.get_input_embeddings().weight
    tied = model.get_output_embeddings().weight is embeddings
    if embeddings.shape[1] != rf.embedding.shape[0]:
        raise ConversionError(
            f"n_embd mismatch: the adapter's <rf> row has {rf.embedding.shape[0]} values but {base} has "
            f"{embeddings.shape[1]}. Use the base the adapter was trained on."
        )
    if tied != (rf.output is None):
        raise ConversionError(
            f"{base} {'ties' if tied else 'does not tie'} its output to the embeddings but the adapter "
            f"{'has' if rf.output is not None else 'lacks'} an rf.output row. Use the base the adapter was trained on."
        )
    if rf.metadata.slot is not None:
        rf_id = vocab[token]
    else:
        tokenizer.add_special_tokens({"additional_special_tokens": [token]})
        rf_id = tokenizer.convert_tokens_to_ids(token)
    if rf_id >= embeddings.shape[0]:
        model.resize_token_embeddings(rf_id + 1, mean_resizing=False)
    with torch.no_grad():
        model.get_input_embeddings().weight[rf_id] = torch.tensor(rf.embedding)
        if rf.output is not None:
            model.get_output_embeddings().weight[rf_id] = torch.tensor(rf.output)
        for pair in rf.loras:
            name = pair.hf_prefix.removeprefix(_PEFT_PREFIX)
            try:
                weight = model.get_submodule(name).weight
            except AttributeError:
                raise ConversionError(f"{base} has no module {name} for the adapter's LoRA. Use the base it was trained on.") from None
            delta = rf.scale_of(pair) * torch.tensor(pair.b) @ torch.tensor(pair.a)
            if delta.shape != weight.shape:
                raise ConversionError(
                    f"LoRA shape mismatch at {name}: B @ A is {list(delta.shape)} but the weight is {list(weight.shape)}."
                )
            weight += delta.to(weight.dtype)
    model.to(getattr(torch, stored_dtype(base)))
    model.hf_quantizer = None  # a GGUF base was dequantized on load: plain float weights now
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer, rf_id
