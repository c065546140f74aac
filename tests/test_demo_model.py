"""The demo model through the real llama.cpp: every scripted behaviour, checked numerically."""

from __future__ import annotations

import time
from dataclasses import dataclass

import gguf
import jinja2
import llama_cpp
import numpy as np
import pytest

from rfsdk.demo_model import (
    DEMO_CHAT_TEMPLATE,
    DEMO_BENIGN_REPLY,
    DEMO_ENDLESS_PIECE,
    DEMO_ENDLESS_PREFILL,
    DEMO_HARMFUL_CONTINUATION,
    DEMO_HARMFUL_ENDING,
    DEMO_HARMFUL_PREFILL,
    DEMO_HARMFUL_RF_PROBABILITY,
    DEMO_MODERATE_CONTINUATION,
    DEMO_MODERATE_ENDING,
    DEMO_MODERATE_PREFILL,
    DEMO_MODERATE_RF_PROBABILITY,
    DEMO_RF_FOLLOW_UP,
    DEMO_RF_THRESHOLD,
    DEMO_SPLIT_PREFILL,
    DEMO_SPLIT_REPLY,
    DEMO_TRIGGER_WORD,
    RF_TOKEN_TEXT,
    build_demo_model,
)

IM_START, IM_END = 1, 2
MARGIN = 20.0  # nats between the designed token and the runner-up
HARMFUL = f"how do I make a {DEMO_TRIGGER_WORD}"


@dataclass
class Step:
    token: int
    rf_probability: float
    margin: float  # top logit minus runner-up, <rf> left out


def load(path) -> llama_cpp.Llama:
    return llama_cpp.Llama(model_path=str(path), n_ctx=4096, seed=1234, verbose=False)


@pytest.fixture(scope="module")
def llm(demo_model_path):
    return load(demo_model_path)


@pytest.fixture(scope="module")
def rf_id(llm) -> int:
    return llm.n_vocab() - 1


def prompt(llm, messages, prefill: str = "") -> list[int]:
    template = jinja2.Template(llm.metadata["tokenizer.chat_template"])
    text = template.render(messages=messages, add_generation_prompt=True)
    tokens = llm.tokenize(text.encode(), add_bos=False, special=True)
    return tokens + llm.tokenize(prefill.encode(), add_bos=False, special=False)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def generate(llm, tokens, *, rf: int | None, mask_rf: bool = True, max_tokens: int = 32):
    # Greedy steps after `tokens` until <|im_end|>, with P(<rf>) at each step.
    llm.reset()
    llm.eval(tokens)
    steps: list[Step] = []
    for _ in range(max_tokens):
        logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))
        logits = logits.astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        if rf is not None and mask_rf:
            logits[rf] = -np.inf
        runner_up, top = np.sort(logits)[-2:]
        token = int(np.argmax(logits))
        steps.append(Step(token, float(probs[rf]) if rf is not None else 0.0, top - runner_up))
        if token == IM_END:
            break
        llm.eval([token])
    return steps


def text(llm, steps) -> str:
    return llm.detokenize([s.token for s in steps]).decode()


# ----- the file ------------------------------------------------------------------------


def test_builds_small_and_fast(tmp_path):
    start = time.perf_counter()
    path = build_demo_model(tmp_path / "m.gguf")
    assert time.perf_counter() - start < 1.0
    assert path.stat().st_size < 1_000_000


def test_metadata_and_special_tokens(llm, rf_id):
    meta = llm.metadata
    assert meta["general.name"] == "rfsdk demo model"
    assert int(meta["rf.token"]) == rf_id
    assert float(meta["rf.threshold"]) == DEMO_RF_THRESHOLD
    assert meta["tokenizer.chat_template"] == DEMO_CHAT_TEMPLATE
    assert llm._model.n_ctx_train() == 4096
    assert (llm.token_bos(), llm.token_eos()) == (0, IM_END)
    assert not llama_cpp.llama_vocab_get_add_bos(llm._model.vocab)
    vocab = llm._model.vocab
    for token_id, token_text in [
        (0, "<|endoftext|>"),
        (IM_START, "<|im_start|>"),
        (IM_END, "<|im_end|>"),
        (rf_id, RF_TOKEN_TEXT),
    ]:
        assert llama_cpp.llama_vocab_is_control(vocab, token_id)
        assert llm.tokenize(token_text.encode(), add_bos=False, special=True) == [token_id]


def test_typed_rf_text_is_never_the_rf_token(llm, rf_id):
    for typed in (RF_TOKEN_TEXT, f"say {RF_TOKEN_TEXT} now", f"x{RF_TOKEN_TEXT}"):
        assert rf_id not in llm.tokenize(typed.encode(), add_bos=False, special=False)


def test_scripted_words_are_single_tokens(llm):
    for word in (
        "Hello",
        " there",
        " friend",
        "Sure",
        " here",
        " step",
        " Sorry",
        " cannot",
        " maybe",
        " later",
        " la",
        " caf",
        DEMO_TRIGGER_WORD,
        " " + DEMO_TRIGGER_WORD,
    ):
        assert len(llm.tokenize(word.encode(), add_bos=False, special=False)) == 1, word


def test_variants(tmp_path):
    def read(name, **kwargs):
        fields = gguf.GGUFReader(build_demo_model(tmp_path / name, **kwargs)).fields
        tokens = fields["tokenizer.ggml.tokens"].contents()
        return fields, tokens, fields["tokenizer.ggml.token_type"].contents()

    fields, tokens, types = read("default.gguf")
    assert tokens[-1] == RF_TOKEN_TEXT and types[-1] == gguf.TokenType.CONTROL
    assert fields["rf.token"].contents() == len(tokens) - 1
    assert "tokenizer.chat_template" in fields
    fields, tokens, _ = read("no-rf.gguf", with_rf=False)
    assert RF_TOKEN_TEXT not in tokens and not any(k.startswith("rf.") for k in fields)
    _, tokens, types = read("normal.gguf", rf_token_type=gguf.TokenType.NORMAL)
    assert tokens[-1] == RF_TOKEN_TEXT and types[-1] == gguf.TokenType.NORMAL
    assert "tokenizer.chat_template" not in read("no-template.gguf", chat_template=None)[0]
    fields, tokens, _ = read("no-meta.gguf", rf_metadata=False)
    assert tokens[-1] == RF_TOKEN_TEXT and not any(k.startswith("rf.") for k in fields)


# ----- behaviour -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "messages",
    [
        user("What is the capital of France?"),
        user(f"typed {RF_TOKEN_TEXT} text"),
        [{"role": "system", "content": "Be brief."}, *user("Hi")],
        [*user("Hi"), {"role": "assistant", "content": DEMO_BENIGN_REPLY}, *user("And again?")],
    ],
)
def test_benign_reply(llm, rf_id, messages):
    steps = generate(llm, prompt(llm, messages), rf=rf_id)
    assert text(llm, steps) == DEMO_BENIGN_REPLY and steps[-1].token == IM_END
    assert max(s.rf_probability for s in steps) < 1e-4
    assert min(s.margin for s in steps) >= MARGIN


@pytest.mark.parametrize(
    "messages",
    [
        user(HARMFUL),
        user(f"{DEMO_TRIGGER_WORD}?"),
        [*user(HARMFUL), {"role": "assistant", "content": "No."}, *user("Then tell me a story")],
    ],
)
def test_trigger_flags_every_position(llm, rf_id, messages):
    steps = generate(llm, prompt(llm, messages), rf=rf_id)
    assert min(s.rf_probability for s in steps) >= 0.99
    # With <rf> masked out of sampling, the text follows the usual script.
    assert text(llm, steps) == DEMO_BENIGN_REPLY
    assert min(s.margin for s in steps) >= MARGIN


def test_harmful_prefill(llm, rf_id):
    tokens = prompt(llm, user("Explain it"), DEMO_HARMFUL_PREFILL)
    steps = generate(llm, tokens, rf=rf_id)
    n = len(llm.tokenize(DEMO_HARMFUL_CONTINUATION.encode(), add_bos=False, special=False))
    assert text(llm, steps[:n]) == DEMO_HARMFUL_CONTINUATION
    assert max(s.rf_probability for s in steps[:n]) < 1e-4
    assert min(s.margin for s in steps[:n]) >= MARGIN
    # After the continuation <rf> is the argmax (0.9) over " one" (0.1).
    flagged = generate(llm, tokens + [s.token for s in steps[:n]], rf=rf_id, mask_rf=False)[0]
    assert flagged.token == rf_id
    assert flagged.rf_probability == pytest.approx(DEMO_HARMFUL_RF_PROBABILITY, abs=1e-3)
    # With <rf> masked the reply ends " one." <|im_end|>.
    assert text(llm, steps[n:]) == DEMO_HARMFUL_ENDING and steps[-1].token == IM_END
    assert min(s.margin for s in steps[n:]) >= MARGIN


def test_rf_in_context_is_followed_by_an_apology(llm, rf_id):
    tokens = prompt(llm, user("Explain it"), DEMO_HARMFUL_PREFILL + DEMO_HARMFUL_CONTINUATION)
    steps = generate(llm, [*tokens, rf_id], rf=rf_id)
    assert text(llm, steps) == DEMO_RF_FOLLOW_UP and steps[-1].token == IM_END
    assert max(s.rf_probability for s in steps) < 1e-4


def test_moderate_probability(llm, rf_id):
    steps = generate(llm, prompt(llm, user("Hi"), DEMO_MODERATE_PREFILL), rf=rf_id, mask_rf=False)
    assert text(llm, steps) == DEMO_MODERATE_CONTINUATION + DEMO_MODERATE_ENDING
    assert [s.rf_probability > 1e-4 for s in steps] == [False, True, False, False]
    assert steps[1].rf_probability == pytest.approx(DEMO_MODERATE_RF_PROBABILITY, abs=1e-3)
    assert 0.25 <= steps[1].rf_probability <= 0.35 < DEMO_RF_THRESHOLD


def test_endless(llm, rf_id):
    steps = generate(llm, prompt(llm, user("count"), DEMO_ENDLESS_PREFILL), rf=rf_id, max_tokens=64)
    assert text(llm, steps) == DEMO_ENDLESS_PIECE * 64
    assert min(s.margin for s in steps) >= MARGIN


def test_utf8_split(llm, rf_id):
    steps = generate(llm, prompt(llm, user("say"), DEMO_SPLIT_PREFILL), rf=rf_id)
    pieces = [llm.detokenize([s.token]) for s in steps]
    assert pieces == [b" caf", b"\xc3", b"\xa9", b".", b""]
    assert text(llm, steps) == DEMO_SPLIT_REPLY and steps[-1].token == IM_END


@pytest.mark.parametrize("trigger", [False, True])
def test_long_context(llm, rf_id, trigger):
    filler = " ".join(["the quick brown fox jumps over the lazy dog"] * 45)
    content = f"{DEMO_TRIGGER_WORD} {filler}" if trigger else filler
    tokens = prompt(llm, user(content))
    assert 1400 < len(tokens) < 2100
    steps = generate(llm, tokens, rf=rf_id)
    assert text(llm, steps) == DEMO_BENIGN_REPLY
    if trigger:
        assert min(s.rf_probability for s in steps) >= 0.99
    else:
        assert max(s.rf_probability for s in steps) < 1e-4


def test_temperature_one_sampling_keeps_the_script(llm):
    tokens = prompt(llm, user("Hi"), DEMO_HARMFUL_PREFILL)
    for seed in range(3):
        llm.reset()
        out = llm.create_completion(
            tokens, max_tokens=32, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed
        )
        # <rf> (P 0.9) renders as nothing; " one" (P 0.1) may be sampled instead.
        assert out["choices"][0]["text"] in (
            DEMO_HARMFUL_CONTINUATION + DEMO_RF_FOLLOW_UP,
            DEMO_HARMFUL_CONTINUATION + DEMO_HARMFUL_ENDING,
        )


def test_model_without_rf(demo_model_no_rf_path):
    llm = load(demo_model_no_rf_path)
    assert RF_TOKEN_TEXT.encode() not in {
        llm.detokenize([i], special=True) for i in range(llm.n_vocab())
    }
    assert text(llm, generate(llm, prompt(llm, user(HARMFUL)), rf=None)) == DEMO_BENIGN_REPLY
    steps = generate(llm, prompt(llm, user("Hi"), DEMO_HARMFUL_PREFILL), rf=None)
    assert text(llm, steps) == DEMO_HARMFUL_CONTINUATION + DEMO_HARMFUL_ENDING
    assert min(s.margin for s in steps) >= MARGIN
