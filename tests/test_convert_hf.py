"""rf-convert hf: tiny random HF checkpoints built here, converted, and run with llama.cpp.

The converted models must give the same next-token logits as transformers (float32) and
tokenize like the HF tokenizer. Needs torch, transformers and tokenizers (skipped without).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from gguf import TokenType
from rfsdk.convert import keys
from rfsdk.cli.convert import main
from rfsdk.convert.hf import convert_hf
from rfsdk.convert.hf_vocab import PRE_TOKENIZERS
from rfsdk.convert.reader import field_value, open_gguf

from rfsdk.errors import ConversionError, ModelNotFoundError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
llama_cpp = pytest.importorskip("llama_cpp")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's 2024, isn't it?",
    "Hello world! Hello there, hello again; the dog's ball is red.",
    "Numbers 3 33 333 3333 and 12345 appear here, with tabs\tand\nnew lines.",
    "unicode: café naïve 🦙 über – 你好世界",
    "  leading spaces and trailing    ",
]
TEST_TEXTS = [
    *CORPUS,
    "<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n",
    "a<rf>b <rf> the dog<|endoftext|>",
    "I'VE been 'told he's THERE 12345678 ...!!!???",
    "",
    "\n\n \t x",
]
PRE_OF = {v: k for k, v in PRE_TOKENIZERS.items()}


@dataclass(frozen=True)
class Case:
    arch: str
    tied: bool
    pre: str
    extra_vocab: int = 0
    sharded: bool = False


CASES = {
    "llama-tied-smollm": Case("llama", True, "smollm"),
    "llama-untied-llama3": Case("llama", False, "llama-bpe", extra_vocab=5, sharded=True),
    "qwen2-tied": Case("qwen2", True, "qwen2"),
    "qwen2-untied": Case("qwen2", False, "qwen2", extra_vocab=3),
    "mistral-spm": Case("mistral", False, "spm", extra_vocab=2),
    "llama-spm-tied": Case("llama", True, "spm"),
}


def _pre_tokenizer(pre: str):
    from tokenizers import Regex, pre_tokenizers

    parts = []
    for item in PRE_OF[pre]:
        if item[0] == "split":
            parts.append(pre_tokenizers.Split(Regex(item[1]), behavior="isolated", invert=False))
        elif item[0] == "digits":
            parts.append(pre_tokenizers.Digits(individual_digits=item[1]))
        else:
            parts.append(pre_tokenizers.ByteLevel(add_prefix_space=item[1], use_regex=item[2]))
    return pre_tokenizers.Sequence(parts)


def build_spm_tokenizer(folder: Path):
    """A SentencePiece BPE tokenizer (byte fallback, like Llama 2 / Mistral) trained here."""
    import io

    spm = pytest.importorskip("sentencepiece")
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 4),
        model_writer=buf,
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        hard_vocab_limit=False,
        split_digits=True,
        character_coverage=1.0,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        minloglevel=2,
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(buf.getvalue())
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "legacy": True}))
    return transformers.AutoTokenizer.from_pretrained(folder)


def build_tokenizer(pre: str, with_rf: bool = True, folder: Path | None = None):
    if pre == "spm":
        assert folder is not None
        fast = build_spm_tokenizer(folder)
        if with_rf:
            fast.add_special_tokens({"additional_special_tokens": ["<rf>"]})
        fast.chat_template = TEMPLATE
        return fast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = _pre_tokenizer(pre)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=330,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    if with_rf:
        fast.add_special_tokens({"additional_special_tokens": ["<rf>"]})
    fast.chat_template = TEMPLATE
    return fast


def build_checkpoint(path: Path, case: Case, with_rf: bool = True) -> Path:
    tok = build_tokenizer(case.pre, with_rf, path)
    common = dict(
        vocab_size=len(tok) + case.extra_vocab,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        tie_word_embeddings=case.tied,
        initializer_range=0.15,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    if case.arch == "llama":
        config = transformers.LlamaConfig(**common)
        model_cls = transformers.LlamaForCausalLM
    elif case.arch == "mistral":
        config = transformers.MistralConfig(**common, sliding_window=None)
        model_cls = transformers.MistralForCausalLM
    else:
        config = transformers.Qwen2Config(**common, use_sliding_window=False)
        model_cls = transformers.Qwen2ForCausalLM
    torch.manual_seed(0)
    model = model_cls(config).eval()
    with torch.no_grad():  # norms and biases away from their 1/0 init, so mistakes show
        for name, param in model.named_parameters():
            if param.ndim == 1:
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(path, max_shard_size="200KB" if case.sharded else "10GB")
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=list(CASES))
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Case, Path]:
    case = CASES[request.param]
    return case, build_checkpoint(tmp_path_factory.mktemp(request.param) / "hf", case)


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("qwen") / "hf", CASES["qwen2-untied"])


def _llama(path: Path) -> llama_cpp.Llama:
    # float32 KV cache: the default f16 cache alone moves logits by ~5e-3
    return llama_cpp.Llama(
        str(path),
        n_ctx=128,
        n_batch=128,
        logits_all=True,
        verbose=False,
        n_threads=2,
        type_k=llama_cpp.GGML_TYPE_F32,
        type_v=llama_cpp.GGML_TYPE_F32,
    )


def _hf_logits(src: Path, ids: list[int]) -> np.ndarray:
    model = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def _gguf_logits(llm: llama_cpp.Llama, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def _sequences(src: Path) -> list[list[int]]:
    tok = transformers.AutoTokenizer.from_pretrained(src)
    return [tok.encode(text, add_special_tokens=False) for text in TEST_TEXTS[:4]] + [
        list(range(0, 40, 3)),
        [len(tok) - 1, 5, 7, len(tok) - 1],  # ends with <rf>
    ]


def _sentencepiece(src: Path):
    spm = pytest.importorskip("sentencepiece")
    return spm.SentencePieceProcessor(model_file=str(src / "tokenizer.model"))


def _no_leftovers(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".part") or ".part." in p.name]


def test_f32_matches_transformers(checkpoint: tuple[Case, Path], tmp_path: Path) -> None:
    case, src = checkpoint
    out = tmp_path / "m.gguf"
    result = CliRunner().invoke(main, ["hf", str(src), str(out), "--outtype", "f32", "--threshold", "0.25"])
    assert result.exit_code == 0, result.output
    assert "CONTROL token" in result.output
    _no_leftovers(tmp_path)

    tok = transformers.AutoTokenizer.from_pretrained(src)
    reader = open_gguf(out)
    rf_id = tok.convert_tokens_to_ids("<rf>")
    assert field_value(reader, keys.RF_TOKEN) == rf_id
    assert field_value(reader, keys.RF_THRESHOLD) == pytest.approx(0.25)
    assert field_value(reader, keys.RF_FORMAT) == "rfsdk-hf/1"
    assert "hf" in field_value(reader, keys.RF_SOURCE)
    spm = case.pre == "spm"
    assert field_value(reader, "tokenizer.ggml.pre") == ("default" if spm else case.pre)
    assert field_value(reader, "tokenizer.ggml.model") == ("llama" if spm else "gpt2")
    assert field_value(reader, "tokenizer.chat_template") == TEMPLATE
    assert field_value(reader, "tokenizer.ggml.eos_token_id") == tok.eos_token_id
    names = {t.name for t in reader.tensors}
    assert ("output.weight" in names) is (not case.tied)
    tokens = field_value(reader, "tokenizer.ggml.tokens")
    types = field_value(reader, "tokenizer.ggml.token_type")
    assert len(tokens) == len(tok) + case.extra_vocab
    assert types[rf_id] == TokenType.CONTROL
    for i in range(len(tok), len(tokens)):
        assert tokens[i] == f"[PAD{i}]" and types[i] == TokenType.UNUSED
    del reader

    llm = _llama(out)
    # tokenization: identical to HF, special tokens parsed, <rf> a single CONTROL id
    for text in TEST_TEXTS:
        expected = tok.encode(text, add_special_tokens=False)
        if spm:  # sentencepiece itself on each piece between <rf>s, as llama.cpp (and legacy HF) split it
            sp, parts = _sentencepiece(src), text.split("<rf>")
            expected = [i for n, part in enumerate(parts) for i in ([rf_id] if n else []) + sp.encode(part)]
        got = llm.tokenize(text.encode(), add_bos=False, special=True)
        assert got == expected, text
    assert llm.tokenize(b"<rf>", add_bos=False, special=True) == [rf_id]
    assert rf_id not in llm.tokenize(b"<rf>", add_bos=False, special=False)
    attr = llama_cpp.llama_vocab_get_attr(llm._model.vocab, rf_id)
    assert attr & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL

    for ids in _sequences(src):
        expected = _hf_logits(src, ids)
        got = _gguf_logits(llm, ids)
        assert np.abs(got - expected).max() <= 1e-3, ids
        assert (got.argmax(-1) == expected.argmax(-1)).all()


@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0", "q4_k_m"])
def test_other_outtypes_load_and_run(qwen_dir: Path, tmp_path: Path, outtype: str) -> None:
    out = tmp_path / f"m-{outtype}.gguf"
    report = convert_hf(qwen_dir, out, outtype=outtype)
    assert report.outtype == outtype
    _no_leftovers(tmp_path)
    reader = open_gguf(out)
    assert field_value(reader, keys.RF_TOKEN) == report.rf_token_id
    qtypes = {t.name: t.tensor_type.name for t in reader.tensors}
    assert qtypes["blk.0.attn_norm.weight"] == "F32"
    del reader
    ids = _sequences(qwen_dir)[0]
    expected = _hf_logits(qwen_dir, ids)
    got = _gguf_logits(_llama(out), ids)
    # (max |diff|, mean |diff|, top-1 agreement) bounds; the logits have std ~1.2
    max_diff, mean_diff, top1 = {
        "f16": (0.03, 0.005, 1.0),
        "bf16": (0.2, 0.03, 0.9),
        "q8_0": (0.6, 0.08, 0.9),
        "q4_k_m": (6.0, 0.5, 0.5),
    }[outtype]
    diff = np.abs(got - expected)
    assert np.isfinite(got).all()
    assert diff.max() <= max_diff and diff.mean() <= mean_diff
    assert (got.argmax(-1) == expected.argmax(-1)).mean() >= top1


def test_rf_config_threshold_and_no_threshold(qwen_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(qwen_dir, src)
    report = convert_hf(src, tmp_path / "a.gguf", outtype="f32")
    assert report.threshold is None
    assert field_value(open_gguf(tmp_path / "a.gguf"), keys.RF_THRESHOLD) is None
    (src / "rf_config.json").write_text(json.dumps({"threshold": 0.4}))
    report = convert_hf(src, tmp_path / "b.gguf", outtype="f32")
    assert field_value(open_gguf(tmp_path / "b.gguf"), keys.RF_THRESHOLD) == pytest.approx(0.4)
    report = convert_hf(src, tmp_path / "c.gguf", outtype="f32", threshold=0.7)
    assert report.threshold == pytest.approx(0.7)


def test_no_rf_flag(tmp_path: Path) -> None:
    src = build_checkpoint(tmp_path / "plain", CASES["qwen2-tied"], with_rf=False)
    with pytest.raises(ConversionError, match=r"has no <rf> token.*--no-rf"):
        convert_hf(src, tmp_path / "x.gguf")
    result = CliRunner().invoke(main, ["hf", str(src), str(tmp_path / "x.gguf"), "--no-rf", "-q"])
    assert result.exit_code == 0, result.output
    assert field_value(open_gguf(tmp_path / "x.gguf"), keys.RF_TOKEN) is None


def _edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def _break(src: Path, how: str) -> None:
    if how == "no config":
        (src / "config.json").unlink()
    elif how == "unknown arch":
        _edit_json(src / "config.json", architectures=["GPTNeoXForCausalLM"])
    elif how == "no weights":
        (src / "model.safetensors").unlink()
    elif how == "pickle":
        (src / "model.safetensors").unlink()
        (src / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    elif how == "missing tensor":
        _edit_json(src / "config.json", num_hidden_layers=3)
    elif how == "shape":
        _edit_json(src / "config.json", intermediate_size=128)
    elif how == "untied without lm_head":
        _edit_json(src / "config.json", tie_word_embeddings=False)
    elif how == "no tokenizer":
        (src / "tokenizer.json").unlink()
    elif how == "tokenizer too big":  # a token added to the tokenizer without resizing the embeddings
        rows = json.loads((src / "config.json").read_text())["vocab_size"]
        data = json.loads((src / "tokenizer.json").read_text())
        data["added_tokens"].append({**data["added_tokens"][-1], "id": rows, "content": "<new>"})
        (src / "tokenizer.json").write_text(json.dumps(data))
    elif how == "rf not special":
        data = json.loads((src / "tokenizer.json").read_text())
        for entry in data["added_tokens"]:
            if entry["content"] == "<rf>":
                entry["special"] = False
        (src / "tokenizer.json").write_text(json.dumps(data))
    elif how == "unknown pre":
        data = json.loads((src / "tokenizer.json").read_text())
        data["pre_tokenizer"] = {"type": "Whitespace"}
        (src / "tokenizer.json").write_text(json.dumps(data))
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("no config", "has no config.json"),
        ("unknown arch", "unsupported architecture GPTNeoXForCausalLM.*LlamaForCausalLM"),
        ("no weights", "no weights in"),
        ("pickle", "pickled PyTorch weights.*safetensors"),
        ("missing tensor", "'model.layers.2.input_layernorm.weight' is missing"),
        ("shape", r"has shape \[96, 64\] but config.json implies \[128, 64\]"),
        ("untied without lm_head", "'lm_head.weight' is missing.*tie_word_embeddings"),
        ("no tokenizer", r"no tokenizer in .*: tokenizer.json \(or a SentencePiece tokenizer.model\) is missing"),
        ("tokenizer too big", "embedding has only .* rows.*resize_token_embeddings"),
        ("rf not special", "not as a special added token"),
        ("unknown pre", "--tokenizer-pre"),
    ],
)
def test_bad_checkpoints_are_refused(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, how: str, message: str
) -> None:
    src = tmp_path / "src"
    shutil.copytree(_tied_qwen(tmp_path_factory), src)
    _break(src, how)
    out = tmp_path / "out.gguf"
    result = CliRunner().invoke(main, ["hf", str(src), str(out)])
    assert result.exit_code == 1
    assert "Error:" in result.output
    with pytest.raises(ConversionError, match=message):
        convert_hf(src, out)
    assert not out.exists()
    _no_leftovers(tmp_path)


_TIED: list[Path] = []


def _tied_qwen(factory: pytest.TempPathFactory) -> Path:
    if not _TIED:
        _TIED.append(build_checkpoint(factory.mktemp("tied") / "hf", CASES["qwen2-tied"]))
    return _TIED[0]


def test_bad_paths(tmp_path: Path, qwen_dir: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="checkpoint folder not found"):
        convert_hf(tmp_path / "nope", tmp_path / "o.gguf")
    with pytest.raises(ConversionError, match="is a file"):
        convert_hf(qwen_dir / "config.json", tmp_path / "o.gguf")
    with pytest.raises(ConversionError, match="is the SRC folder"):
        convert_hf(qwen_dir, qwen_dir)
    with pytest.raises(ConversionError, match="never overwrites its inputs"):
        convert_hf(qwen_dir, qwen_dir / "config.json", force=True)
    with pytest.raises(ConversionError, match="does not exist"):
        convert_hf(qwen_dir, tmp_path / "no" / "o.gguf")
    (tmp_path / "o.gguf").write_bytes(b"keep")
    with pytest.raises(ConversionError, match="already exists.*--force"):
        convert_hf(qwen_dir, tmp_path / "o.gguf")
    assert (tmp_path / "o.gguf").read_bytes() == b"keep"
    convert_hf(qwen_dir, tmp_path / "o.gguf", force=True, outtype="f32")
    assert (tmp_path / "o.gguf").read_bytes()[:4] == b"GGUF"


def test_allow_pickle_reads_torch_weights(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    src = tmp_path / "src"
    shutil.copytree(_tied_qwen(tmp_path_factory), src)
    convert_hf(src, tmp_path / "safe.gguf", outtype="f32")
    model = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    torch.save(model.state_dict(), src / "pytorch_model.bin")
    (src / "model.safetensors").unlink()
    with pytest.raises(ConversionError, match=r"pickled PyTorch weights \(pytorch_model.bin\).*--allow-pickle"):
        convert_hf(src, tmp_path / "p.gguf", outtype="f32")
    result = CliRunner().invoke(main, ["hf", str(src), str(tmp_path / "p.gguf"), "--outtype", "f32", "--allow-pickle"])
    assert result.exit_code == 0, result.output
    safe, pickled = open_gguf(tmp_path / "safe.gguf"), open_gguf(tmp_path / "p.gguf")
    assert [t.name for t in safe.tensors] == [t.name for t in pickled.tensors]
    for a, b in zip(safe.tensors, pickled.tensors):
        np.testing.assert_array_equal(a.data, b.data)
