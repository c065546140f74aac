"""Red-flag training on a tiny random Llama: the loss terms move the way they must."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch", reason="the train extra is not installed")
transformers = pytest.importorskip("transformers", reason="the train extra is not installed")

from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402

from rfsdk.convert.adapter import load_adapter  # noqa: E402
from rfsdk.train.base import enable_checkpointing  # noqa: E402
from rfsdk.train.adversarial import AdversarialConfig, attack  # noqa: E402
from rfsdk.train.loss import LossWeights  # noqa: E402
from rfsdk.train.loop import TokenizedExample, TrainConfig, train  # noqa: E402
from rfsdk.train.rf_model import AdapterMismatchError, RfModel  # noqa: E402

VOCAB = 64


def tiny(tied: bool = True, rank: int = 4, dtype: torch.dtype = torch.float32) -> tuple[RfModel, object]:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied,
    )
    model = transformers.LlamaForCausalLM(config).to(dtype)
    vocab = {f"t{i}": i for i in range(VOCAB)}
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")), unk_token="t0"
    )
    return RfModel.prepare(model, tokenizer, rank=rank, alpha=8), tokenizer


def data(seed: int = 0):
    rng = random.Random(seed)
    harmful = [TokenizedExample([1, 2, 3], [rng.randrange(40, 50) for _ in range(8)]) for _ in range(16)]
    benign = [TokenizedExample([1, 2, 4], [rng.randrange(10, 20) for _ in range(8)]) for _ in range(16)]
    return harmful, benign


def rf_probability(rf: RfModel, example: TokenizedExample) -> float:
    with torch.no_grad():
        logits = rf.logits(example.prompt + example.answer)
    p = len(example.prompt)
    probs = logits[p - 1 : p + len(example.answer) - 1].softmax(-1)[:, rf.rf_id]
    return probs.mean().item()


def test_prepare_adds_rf_and_freezes_the_rest():
    rf, tokenizer = tiny()
    assert rf.rf_id == VOCAB and tokenizer.convert_tokens_to_ids("<rf>") == VOCAB
    assert rf.model.get_input_embeddings().weight.shape[0] == VOCAB + 1
    trainable = {n for n, p in rf.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora" in n for n in trainable)  # the embedding matrices stay frozen
    assert len(rf.loras) == 2 * 7
    assert [tuple(row.shape) for row in rf.rows] == [(32,)]  # the tied <rf> row: its own parameter
    assert torch.allclose(rf.rows[0], rf.model.get_input_embeddings().weight[:VOCAB].mean(dim=0))


@pytest.mark.parametrize("tied", [True, False])
def test_the_optimizer_keeps_state_for_the_rf_rows_only(tied):
    rf, _ = tiny(tied)
    harmful, benign = data()
    optimizer_state = {}
    original = torch.optim.AdamW

    class Recording(original):
        def step(self, *args, **kwargs):
            result = super().step(*args, **kwargs)
            optimizer_state.update({id(p): s for p, s in self.state.items()})
            return result

    torch.optim.AdamW = Recording
    try:
        train(rf, harmful, benign, TrainConfig(steps=1, batch_size=2))
    finally:
        torch.optim.AdamW = original
    row_state = sum(optimizer_state[id(row)]["exp_avg"].numel() for row in rf.rows)
    embedding = rf.model.get_input_embeddings().weight.numel() * len(rf.rows)
    assert row_state == 32 * len(rf.rows) and row_state < 0.01 * embedding * VOCAB / 64 * 2


def reference_terms(rf: RfModel, h: TokenizedExample, position: int, b: TokenizedExample) -> dict[str, float]:
    """The loss terms from whole-sequence logits, one example at a time (the definition)."""
    import torch.nn.functional as F

    def kl(base, model):
        return F.kl_div(model.log_softmax(-1), base.log_softmax(-1), log_target=True, reduction="batchmean").item()

    p = len(h.prompt)
    with torch.no_grad():
        terms = {}
        if not h.answer:
            terms["rf"] = -rf.logits(h.prompt)[-1].log_softmax(-1)[rf.rf_id].item()
        else:
            logits = rf.logits(h.prompt + h.answer[:position] + [rf.rf_id] + h.answer[position:])
            base = rf.base_logits(h.prompt + h.answer)
            terms["rf"] = -logits[p + position - 1].log_softmax(-1)[rf.rf_id].item()
            terms["after_kl"] = kl(base[p + position - 1 : p + len(h.answer) - 1], logits[p + position : p + len(h.answer)])
        q, ids = len(b.prompt), b.prompt + b.answer
        terms["benign_kl"] = kl(rf.base_logits(ids)[q - 1 : q + len(b.answer) - 1], rf.logits(ids)[q - 1 : q + len(b.answer) - 1])
        terms["benign_start"] = -torch.log1p(-rf.logits(b.prompt)[-1].softmax(-1)[rf.rf_id].double()).item()
    return terms


@pytest.mark.parametrize("tied", [True, False])
def test_a_padded_batch_gives_each_example_its_own_terms(tied):
    from rfsdk.train.loss import HarmfulItem, batch_terms

    rf, _ = tiny(tied)
    with torch.no_grad():
        for lora in rf.loras.values():
            lora.lora_b.normal_(std=0.1)
        rf.rows[-1].normal_()
    rng = random.Random(3)
    harmful = [TokenizedExample([1, 2, 3][: 1 + i], [rng.randrange(40, 50) for _ in range(n)]) for i, n in enumerate((0, 5, 9))]
    positions = [0, 2, 7]
    benign = [TokenizedExample([1, 2, 4, 5][: 2 + i], [rng.randrange(10, 20) for _ in range(1 + 3 * i)]) for i in range(3)]
    with torch.no_grad():
        batched = batch_terms(rf, [HarmfulItem(h.prompt, h.answer, k) for h, k in zip(harmful, positions)],
                              [(b.prompt, b.answer) for b in benign])
    for i, (h, k, b) in enumerate(zip(harmful, positions, benign)):
        got = {name: value.item() for name, value in (batched[i] | batched[3 + i]).items()}
        assert got == pytest.approx(reference_terms(rf, h, k, b), rel=1e-4, abs=1e-6)


def test_a_padded_batch_and_one_sequence_at_a_time_give_the_same_logits():
    """On CPU the sequences run unpadded, one at a time; on a GPU as one padded batch: the same logits."""
    from rfsdk.train.loss import _Span, span_logits

    rf, _ = tiny()
    with torch.no_grad():
        for lora in rf.loras.values():
            lora.lora_b.normal_(std=0.1)
        sequences = [[1, 2, 3, 41, 42], [1, 2, 4, 5, 11, 12, 13, 14, 15], [1, 7]]
        spans = [_Span(0, 2, 2), _Span(1, 3, 5), _Span(2, 1, 1)]
        padded = span_logits(rf, sequences, spans, padded=True)
        one_at_a_time = span_logits(rf, sequences, spans, padded=False)
    assert padded.shape == (8, rf.model.get_output_embeddings().weight.shape[0])
    assert torch.allclose(padded, one_at_a_time, atol=1e-5)


def trained_tiny_and_pair() -> tuple[RfModel, TokenizedExample, TokenizedExample]:
    """A tiny model whose LoRA is not zero (as after training), and one harmful and one benign example."""
    rf, _ = tiny()
    with torch.no_grad():
        for lora in rf.loras.values():
            lora.lora_b.normal_(std=0.1)
    return rf, TokenizedExample([1, 2, 3], [41, 42, 43, 44, 45]), TokenizedExample([1, 2, 4], [11, 12, 13, 14])


def test_the_batched_loss_has_the_gradients_of_its_definition():
    """The loss never stores a log-softmax of the trained logits; its gradients must still be the definition's."""
    import torch.nn.functional as F

    from rfsdk.train.loss import HarmfulItem, batch_terms

    rf, h, b = trained_tiny_and_pair()
    trained = rf.trainable()

    def gradients(loss: torch.Tensor) -> list[torch.Tensor]:
        return [g.clone() for g in torch.autograd.grad(loss, trained)]

    batched = batch_terms(rf, [HarmfulItem(h.prompt, h.answer, 2)], [(b.prompt, b.answer)])
    got = gradients(sum(value for terms in batched for value in terms.values()))
    logits = rf.logits(h.prompt + h.answer[:2] + [rf.rf_id] + h.answer[2:]).log_softmax(-1)
    base = rf.base_logits(h.prompt + h.answer).log_softmax(-1)
    benign = rf.logits(b.prompt + b.answer).log_softmax(-1)
    benign_base = rf.base_logits(b.prompt + b.answer).log_softmax(-1)
    definition = (
        -logits[4, rf.rf_id]
        + F.kl_div(logits[5:8], base[4:7], log_target=True, reduction="batchmean")
        + F.kl_div(benign[2:6], benign_base[2:6], log_target=True, reduction="batchmean")
        - torch.log1p(-benign[2, rf.rf_id].exp())
    )
    for ours, theirs in zip(got, gradients(definition)):
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-7)


def test_a_bf16_base_pass_gives_the_fp32_terms_and_gradients_to_bf16_precision():
    """The frozen base's pass under bfloat16 autocast: the KL terms move by bfloat16 rounding only."""
    from rfsdk.train.loss import HarmfulItem, batch_terms

    rf, h, b = trained_tiny_and_pair()
    trained = rf.trainable()

    def terms_and_gradients(base_bf16: bool):
        terms = batch_terms(rf, [HarmfulItem(h.prompt, h.answer, 2)], [(b.prompt, b.answer)], base_bf16=base_bf16)
        values = {name: value for example in terms for name, value in example.items()}
        gradients = torch.autograd.grad(sum(values.values()), trained)
        return {name: value.item() for name, value in values.items()}, gradients

    fp32, fp32_gradients = terms_and_gradients(False)
    bf16, bf16_gradients = terms_and_gradients(True)
    assert bf16["rf"] == fp32["rf"] and bf16["benign_start"] == fp32["benign_start"]  # they do not read the base
    for name in ("after_kl", "benign_kl"):
        assert bf16[name] != fp32[name] and bf16[name] == pytest.approx(fp32[name], abs=5e-3)
    for ours, theirs in zip(bf16_gradients, fp32_gradients):
        assert torch.allclose(ours, theirs, rtol=0.05, atol=2e-3)


def test_the_bf16_base_pass_casts_the_frozen_weights_once_and_keeps_no_copy():
    from rfsdk.train.lora import base_weights_cast

    rf, _ = tiny()
    ids = [1, 2, 3, 40, 41]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        per_call = rf.base_logits(ids)  # autocast casting each weight at each call
        with base_weights_cast(rf.loras, torch.bfloat16):
            assert all(lora.cast is not None and lora.cast[0].dtype == torch.bfloat16 for lora in rf.loras.values())
            cast_once = rf.base_logits(ids)
    assert torch.allclose(cast_once, per_call, rtol=1e-3, atol=1e-3)
    assert all(lora.cast is None for lora in rf.loras.values())
    assert next(iter(rf.loras.values())).base.weight.dtype == torch.float32


def test_the_base_pass_precision_resolves_by_choice_and_device():
    from rfsdk.train.precision import base_pass_bf16, native_bf16

    cpu = torch.device("cpu")
    assert not base_pass_bf16("fp32", cpu, "fp32") and base_pass_bf16("bf16", cpu, "fp32")
    assert base_pass_bf16("auto", cpu, "fp32") == native_bf16(cpu)
    assert not base_pass_bf16("auto", torch.device("meta"), "fp32")
    assert base_pass_bf16("auto", torch.device("meta"), "bf16")  # bfloat16 weights give a bfloat16 pass


def test_bf16_and_gradient_checkpointing_train_like_fp32():
    harmful, benign = data()
    config = TrainConfig(steps=3, batch_size=2, lr=3e-3, rf_lr=3e-2)
    plain = train(tiny()[0], harmful, benign, config)
    checkpointed, _ = tiny()
    enable_checkpointing(checkpointed.model)
    flat = lambda history: [h[name] for h in history for name in sorted(h)]  # noqa: E731
    assert flat(train(checkpointed, harmful, benign, config)) == pytest.approx(flat(plain), rel=1e-4)
    half, _ = tiny(dtype=torch.bfloat16)
    assert half.rows[0].dtype == torch.float32 and next(iter(half.loras.values())).lora_a.dtype == torch.float32
    history = train(half, harmful, benign, config)
    assert [h["rf"] for h in history] == pytest.approx([h["rf"] for h in plain], rel=0.05)
    assert half.model.get_input_embeddings().weight.dtype == torch.bfloat16 and half.rows[0].dtype == torch.float32


def test_base_is_the_same_network_with_adapters_off():
    rf, _ = tiny()
    ids = [1, 2, 3, 40, 41]
    with torch.no_grad():
        for lora in rf.loras.values():
            lora.lora_b.normal_()
        changed = rf.logits(ids)
    base = rf.base_logits(ids)
    assert not torch.allclose(changed[:, :VOCAB], base[:, :VOCAB])
    assert (base[:, rf.rf_id] < -1e3).all()


def test_training_raises_rf_on_harmful_and_keeps_it_low_on_benign(tmp_path):
    rf, _ = tiny()
    harmful, benign = data()
    held_h, held_b = data(seed=1)
    before = (rf_probability(rf, held_h[0]), rf_probability(rf, held_b[0]))
    history = train(rf, harmful, benign, TrainConfig(steps=40, batch_size=2, lr=3e-3, rf_lr=3e-2))
    after_h = sum(rf_probability(rf, e) for e in held_h) / len(held_h)
    after_b = sum(rf_probability(rf, e) for e in held_b) / len(held_b)
    assert history[-1]["rf"] < history[0]["rf"] / 2
    assert after_h > 0.3 > before[0]
    assert after_b < 0.05
    assert history[-1]["benign_kl"] < 0.05

    path = tmp_path / "adapter.safetensors"
    rf.save_adapter(path, base_model="tiny llama", threshold=0.4)
    adapter = load_adapter(path)
    assert adapter.metadata.lora_rank == 4 and adapter.metadata.lora_alpha == 8
    assert adapter.embedding.shape == (32,) and adapter.output is None
    assert len(adapter.loras) == 14


def test_after_rf_kl_keeps_the_continuation_close_to_the_base():
    def final_after_kl(weight: float) -> float:
        rf, _ = tiny()
        harmful, benign = data()
        config = TrainConfig(steps=40, batch_size=2, lr=3e-3, rf_lr=3e-2, weights=LossWeights(after_kl=weight))
        history = train(rf, harmful, benign, config)
        return sum(h["after_kl"] for h in history[-10:]) / 10

    assert final_after_kl(1.0) < final_after_kl(0.0) / 3


def test_the_benign_start_term_lowers_rf_where_a_near_twin_benign_reply_starts():
    """Benign prompts one token away from harmful ones, with long answers that dilute the KL's reply-start share."""
    rng = random.Random(0)
    harmful = [TokenizedExample([1, 2, 3, 5], [rng.randrange(40, 50) for _ in range(24)]) for _ in range(16)]
    benign = [TokenizedExample([1, 2, 3, 6], [rng.randrange(10, 20) for _ in range(24)]) for _ in range(16)]

    def reply_start_probabilities(weight: float) -> tuple[float, float]:
        rf, _ = tiny()
        config = TrainConfig(steps=15, batch_size=2, lr=3e-3, rf_lr=3e-2, start_probability=1.0,
                             weights=LossWeights(benign_start=weight))
        train(rf, harmful, benign, config)
        with torch.no_grad():
            return tuple(rf.logits(prompt)[-1].softmax(-1)[rf.rf_id].item() for prompt in ([1, 2, 3, 5], [1, 2, 3, 6]))

    (harmful_with, benign_with), (harmful_without, benign_without) = reply_start_probabilities(1.0), reply_start_probabilities(0.0)
    assert benign_with < benign_without / 5
    assert harmful_with > 0.9 and harmful_without > 0.9


def rf_log_probability_at_reply_start(rf: RfModel, example: TokenizedExample, attacked: AdversarialConfig | None):
    ids = example.prompt
    embeds = None if attacked is None else attack(rf, ids, len(ids), attacked)
    with torch.no_grad():
        logits = rf.logits(ids)[-1] if embeds is None else rf.model(inputs_embeds=embeds.unsqueeze(0)).logits[0, -1].float()
    return logits.log_softmax(-1)[rf.rf_id].item()


def test_embedding_attack_lowers_rf_within_its_budget_and_leaves_the_weights_alone():
    rf, _ = tiny()
    harmful, benign = data()
    train(rf, harmful, benign, TrainConfig(steps=15, batch_size=2, lr=3e-3, rf_lr=3e-2, start_probability=1.0))
    rf.model.zero_grad(set_to_none=True)
    example = TokenizedExample([1, 2, 3, 5, 6, 7], [])
    strong = AdversarialConfig(epsilon=0.5, steps=8)
    clean = rf_log_probability_at_reply_start(rf, example, None)
    assert rf_log_probability_at_reply_start(rf, example, strong) < clean - 0.5
    embeds = rf.model.get_input_embeddings()(torch.tensor(example.prompt)).detach()
    moved = (attack(rf, example.prompt, 4, strong) - embeds).norm(dim=-1)
    assert (moved[:4] <= 0.5 * embeds[:4].norm(dim=-1) + 1e-5).all() and (moved[:4] > 0).all()
    assert (moved[4:] == 0).all()  # only the first n_prompt positions are attacked
    assert all(p.grad is None for p in rf.model.parameters())


def test_adversarial_training_makes_rf_robust_to_the_attack():
    harmful, benign = data()
    held = [TokenizedExample([1, 2, 3, 5 + i], []) for i in range(8)]
    attack_config = AdversarialConfig(epsilon=0.3, steps=4)

    def under_attack(adversarial: AdversarialConfig | None) -> tuple[float, list[dict]]:
        rf, _ = tiny()
        config = TrainConfig(steps=15, batch_size=2, lr=3e-3, rf_lr=3e-2, start_probability=0.5, adversarial=adversarial)
        history = train(rf, harmful, benign, config)
        return sum(rf_log_probability_at_reply_start(rf, e, attack_config) for e in held) / len(held), history

    plain, plain_history = under_attack(None)
    robust, history = under_attack(attack_config)
    assert "rf_adv" not in plain_history[-1] and history[-1]["rf_adv"] < history[0]["rf_adv"] / 2
    assert robust > plain + 0.5  # log P(<rf>) under the same attack


def test_untied_model_trains_its_output_row(tmp_path):
    rf, _ = tiny(tied=False)
    assert len(rf.rows) == 2 and all(row.requires_grad for row in rf.rows)
    matrices = [rf.model.get_input_embeddings().weight, rf.model.get_output_embeddings().weight]
    before = [m.detach().clone() for m in matrices] + [row.detach().clone() for row in rf.rows]
    harmful, benign = data()
    train(rf, harmful, benign, TrainConfig(steps=3, batch_size=1))
    assert all(torch.equal(m, b) for m, b in zip(matrices, before))  # the frozen matrices never change
    assert not any(torch.equal(row, b) for row, b in zip(rf.rows, before[2:]))  # the <rf> rows do
    path = tmp_path / "adapter.safetensors"
    rf.save_adapter(path, base_model="tiny", threshold=0.5)
    assert load_adapter(path).output is not None


@pytest.mark.parametrize("tied", [True, False])
def test_a_run_starts_from_a_trained_adapter_as_trained(tmp_path, tied):
    trained, _ = tiny(tied)
    harmful, benign = data()
    train(trained, harmful, benign, TrainConfig(steps=3, batch_size=2))
    path = tmp_path / "adapter.safetensors"
    trained.save_adapter(path, base_model="tiny", threshold=0.5)
    ids = harmful[0].prompt + harmful[0].answer
    fresh, _ = tiny(tied)
    assert not torch.allclose(fresh.logits(ids), trained.logits(ids), atol=1e-3)
    fresh.load_trained(load_adapter(path))
    assert torch.allclose(fresh.logits(ids), trained.logits(ids), atol=1e-5)
    assert torch.equal(fresh.base_logits(ids), trained.base_logits(ids))  # the base is untouched


def test_an_adapter_of_another_shape_is_refused_with_the_fix(tmp_path):
    trained, _ = tiny()
    path = tmp_path / "adapter.safetensors"
    trained.save_adapter(path, base_model="tiny", threshold=0.5)
    with pytest.raises(AdapterMismatchError, match="pass --rank 4 --alpha 8"):
        tiny(rank=2)[0].load_trained(load_adapter(path))
    with pytest.raises(AdapterMismatchError, match="untied"):
        tiny(tied=False)[0].load_trained(load_adapter(path))

def test_checkpoint_and_resume(tmp_path):
    harmful, benign = data()
    config = TrainConfig(steps=6, batch_size=1, checkpoint_every=3)
    straight, _ = tiny()
    full = train(straight, harmful, benign, config)

    interrupted, _ = tiny()
    train(interrupted, harmful, benign, config.model_copy(update={"steps": 3}), out_dir=tmp_path)
    resumed, _ = tiny()
    rest = train(resumed, harmful, benign, config, out_dir=tmp_path)
    assert len(rest) == 3
    assert rest[-1]["rf"] == pytest.approx(full[-1]["rf"], rel=1e-4)


def test_resume_uses_the_learning_rates_asked_for_now(tmp_path):
    harmful, benign = data()
    config = TrainConfig(steps=3, batch_size=1, checkpoint_every=3)
    train(tiny()[0], harmful, benign, config, out_dir=tmp_path)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    stopped = config.model_copy(update={"steps": 5, "lr": 0.0, "rf_lr": 0.0})
    assert len(train(tiny()[0], harmful, benign, stopped, out_dir=tmp_path)) == 2
    after = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert after["step"] > saved["step"]
    for name, tensor in saved["trainable"].items():  # learning rate 0 now: nothing moved
        assert torch.equal(after["trainable"][name], tensor), name


def test_tokenize_example_splits_at_the_assistant_header():
    from rfsdk import CHATML_TEMPLATE
    from rfsdk.train.tokenize import tokenize_example

    vocab = {"<|im_start|>": 0, "<|im_end|>": 1, "user": 2, "assistant": 3, "\n": 4, "hi": 5, "hello": 6}
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="hi")), unk_token="hi"
    )
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Split("\n", "isolated")
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML_TEMPLATE
    example = tokenize_example(tok, "hi", "hello", max_len=64)
    assert example.answer == [6, 1, 4]  # hello <|im_end|> \n
    assert example.prompt[-3:] == [0, 3, 4]  # <|im_start|> assistant \n
    with pytest.raises(ValueError, match="max_len"):
        tokenize_example(tok, "hi", "hello", max_len=4)
