"""llama_kwargs fuzzing: random ``llama_cpp.Llama`` settings (and LoRA files) for the demo model.

Each case is ``GuardedChat(demo, llama_kwargs=...)`` and one turn, run **in a subprocess** by the
loader fuzz's workers (:mod:`test_fuzz_loader`), so a setting that makes llama.cpp abort or
segfault is charged to its case instead of killing pytest. A case sets one to three settings,
each drawn from values around the setting's limits (enum ends, zero, negative, int32 overflow,
NaN, infinities), values of the wrong type, or the values any setting may get; ``lora_path``
also gets well-formed and broken adapters, byte-flipped and truncated adapters, the model
itself, a folder and a missing file.

Allowed outcomes are the loader fuzz's: a clean rfsdk error when loading ("load:ConfigError",
...) or in the turn, or a working chat ("ok", "ok-other", the guard halting on non-finite
logits). Never a signal, a hang, or another exception. CI runs ~200 seeded cases (seconds);
``--long`` (or ``RFSDK_LONG_TESTS=1``) runs 3,000 with a fresh seed (RFSDK_FUZZ_SEED=N repeats one).
"""

from __future__ import annotations

import ast
import inspect
import math
import os
import random
from pathlib import Path

import llama_cpp
import pytest
from demo_lora import bad_loras, write_lora
from test_fuzz_loader import _bad, _layout, _random_cases, _truncation_cases, mutated_bytes, outcome_table, run_cases

SETTINGS = sorted(
    name
    for name, p in inspect.signature(llama_cpp.Llama.__init__).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
)
NAN, INF = math.nan, math.inf
ANY_VALUE = [
    None, True, False, 0, 1, -1, 2, 3, 8, 99, 2**31 - 1, 2**31, 2**32 + 5, -(2**31), 2**63,
    0.0, -0.0, 0.5, -1.0, 1e-30, 1e30, NAN, INF, -INF, "", "1", "f16", [], [1.0], {}, {"x": 1},
]  # fmt: skip
ENUM_EDGES = [-2, -1, 0, 1, 2, 3, 4, 5, 99, 2**31 - 1]
COUNT_EDGES = [-1, 0, 1, 7, 64, 512, 513, 4096, 2**31 - 1, 2**31, 2**40]
FLOAT_EDGES = [0.0, -0.0, -1.0, 1e-30, 0.5, 1.0, 32.0, 1e9, 1e30, 3.4e38, 1e300, NAN, INF, -INF]
EDGES: dict[str, list] = {
    "type_k": list(range(-1, 45)) + [None, 2**31],
    "type_v": list(range(-1, 45)) + [None, 2**31],
    "split_mode": ENUM_EDGES,
    "rope_scaling_type": ENUM_EDGES + [None],
    "pooling_type": ENUM_EDGES,
    "attention_type": ENUM_EDGES,
    "numa": ENUM_EDGES + [True, False],
    "main_gpu": [-1, 0, 1, 15, 16, 2**31],
    "tensor_split": [[1.0], [0.0], [1.0] * 16, [1.0] * 17, [NAN], [-1.0], [INF], [1e30, 1.0], "1,1"],
    "kv_overrides": [
        {}, {"llama.block_count": 0}, {"llama.embedding_length": 0}, {"llama.attention.head_count": 0},
        {"llama.context_length": 1}, {"tokenizer.ggml.add_bos_token": True}, {"general.architecture": "qwen2"},
        {"llama.rope.freq_base": NAN}, {"x": "y"},
    ],  # fmt: skip
    "n_batch": COUNT_EDGES,
    "n_ubatch": COUNT_EDGES,
    "n_threads_batch": COUNT_EDGES + [None],
    "yarn_orig_ctx": COUNT_EDGES,
    "last_n_tokens_size": COUNT_EDGES,
    **{
        name: FLOAT_EDGES
        for name in (
            "rope_freq_base", "rope_freq_scale", "yarn_ext_factor", "yarn_attn_factor",
            "yarn_beta_fast", "yarn_beta_slow", "lora_scale",
        )
    },  # fmt: skip
}


def _lora_values(folder: Path, rng: random.Random, n_mutated: int) -> list[str]:
    """Adapter paths: well-formed, each kind of broken one, byte-flipped and truncated copies, non-adapters."""
    folder.mkdir(parents=True, exist_ok=True)
    good = write_lora(folder / "good.gguf")
    paths = [good, *bad_loras(folder / "bad").values()]
    base = good.read_bytes()
    lay = _layout(good)
    mutated = _random_cases(lay, base, rng, n_mutated) + rng.sample(_truncation_cases(lay, step=1 << 30), 8)
    for i, case in enumerate(mutated):
        path = folder / f"mutated-{i}.gguf"
        path.write_bytes(mutated_bytes(base, case))
        paths.append(path)
    return [str(p) for p in paths] + [str(folder), str(folder / "missing.gguf"), "", "~/no-such-lora.gguf"]


def _value(name: str, rng: random.Random, loras: list[str], model: Path):
    if name == "lora_path":
        return rng.choice(loras + [str(model)] if rng.random() < 0.9 else ANY_VALUE)
    if name in EDGES and rng.random() < 0.7:
        return rng.choice(EDGES[name])
    return rng.choice(ANY_VALUE)


def kwargs_cases(model: Path, folder: Path, long: bool) -> list[dict]:
    """Seeded random llama_kwargs cases (the seed is fresh in long mode), every LoRA path at least once."""
    seed = int(os.environ.get("RFSDK_FUZZ_SEED", "0")) or (random.randrange(1 << 30) if long else 20250301)
    rng = random.Random(seed)
    loras = _lora_values(folder, rng, 300 if long else 40)
    names = SETTINGS + ["n_batchh", "lora"]
    drawn = [{"lora_path": path} for path in loras]
    for _ in range(3000 if long else 150):
        keys = rng.sample(names, rng.choice((1, 1, 2, 3)))
        drawn.append({key: _value(key, rng, loras, model) for key in keys})
    cases: dict[str, dict] = {}
    for kwargs in drawn:
        cid = repr(kwargs)
        cases.setdefault(cid, {"id": cid, "patches": [], "truncate": None, "llama_kwargs": kwargs, "seed": seed})
    return list(cases.values())


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("kwargs-fuzz")


def test_random_llama_kwargs_fail_cleanly(demo_model_path, scratch, long_mode, capsys):
    cases = kwargs_cases(demo_model_path, scratch / "loras", long_mode)
    outcomes = run_cases(cases, demo_model_path, scratch)
    assert set(outcomes) == {c["id"] for c in cases}
    with capsys.disabled():
        print(f"\n(seed {cases[0]['seed']}) " + outcome_table(outcomes).replace("loader-fuzz", "llama_kwargs-fuzz"))
    bad = {cid: o for cid, o in outcomes.items() if _bad(o)}
    assert not bad, f"{len(bad)} cases ended badly:\n" + "\n".join(f"  {k}: {v}" for k, v in sorted(bad.items())[:60])
    # the fuzz reached both the refusals and working chats, LoRA included
    assert any(o == "load:ConfigError" for o in outcomes.values())
    assert any(o == "ok" for o in outcomes.values())
    assert outcomes[repr({"lora_path": str(scratch / "loras" / "good.gguf")})] == "ok"


# ----- pinned cases: settings that once crashed the process -----------------------------------

PINNED: dict[str, str] = {
    # issue 23: a missing or non-LoRA lora_path segfaulted in the first decode
    "{'lora_path': 'typo.gguf'}": "load:ConfigError",
    "{'lora_path': 'MODEL'}": "load:ConfigError",
    # a KV cache type llama.cpp has no kernel for: GGML_ASSERT or segfault
    "{'type_k': 999}": "load:ConfigError",
    "{'type_k': 9}": "load:ConfigError",
    "{'type_k': 10}": "load:ConfigError",
    "{'type_k': 24}": "load:ConfigError",
    # a quantized V cache without flash attention: llama.cpp refused it with a misleading error
    "{'type_v': 8}": "load:ConfigError",
    "{'type_v': 8, 'flash_attn': True}": "ok",
    "{'type_k': 8, 'type_v': 2, 'flash_attn': True}": "ok",
    # a metadata override that breaks the architecture: llama.cpp aborted
    "{'kv_overrides': {'llama.block_count': 0}}": "load:ConfigError",
    # huge thread counts segfaulted; a negative batch crashed at exit; a huge one raised MemoryError
    "{'n_threads_batch': 100000}": "load:ConfigError",
    "{'n_batch': -1}": "load:ConfigError",
    "{'n_batch': 4294967301}": "load:ConfigError",
    "{'n_batch': 2147483647, 'n_ubatch': 2147483647}": "ok",
}


def test_pinned_llama_kwargs_give_their_outcome(demo_model_path, scratch):
    cases = []
    for cid in PINNED:
        kwargs = ast.literal_eval(cid.replace("'MODEL'", repr(str(demo_model_path))))
        cases.append({"id": cid, "patches": [], "truncate": None, "llama_kwargs": kwargs})
    assert run_cases(cases, demo_model_path, scratch) == PINNED
