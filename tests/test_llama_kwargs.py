"""llama_kwargs values are checked before llama.cpp sees them (issue 23, item 2).

Names were always checked; values crashed the process natively (a missing LoRA segfaulted in
the first decode, ``type_k=999`` and ``kv_overrides={"llama.block_count": 0}`` aborted). Now a
value outside a setting's rule is a ConfigError naming the setting, the value and what is
accepted; random values are fuzzed in subprocesses by test_fuzz_llama_kwargs.py.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import llama_cpp
import pytest
from demo_lora import bad_loras, write_lora

from rfsdk import ArgumentTypeError, ConfigError, GuardedChat, SamplingConfig
from rfsdk._llama_kwargs import KV_CACHE_TYPES, check_llama_kwargs
from rfsdk.demo_model import DEMO_BENIGN_REPLY

GREEDY = SamplingConfig(temperature=0.0, max_tokens=8)

REFUSED = [
    ({"type_k": 999}, r"type_k=999 is not accepted; type_k must be one of f32 \(0\), f16 \(1\)"),
    ({"type_k": 10}, "type_k=10 is not accepted"),  # q2_K: llama.cpp has no KV cache kernel for it
    ({"type_v": "q8_0"}, "type_v='q8_0' is not accepted"),
    ({"type_v": llama_cpp.GGML_TYPE_Q8_0}, r"type_v=8 \(q8_0\) needs flash_attn=True"),
    ({"kv_overrides": {"llama.block_count": 0}}, "'kv_overrides' is not supported: an override changes"),
    ({"kv_overrides": {"tokenizer.ggml.add_bos_token": True}}, "'kv_overrides' is not supported"),
    ({"n_batch": 0}, "n_batch=0 is not accepted; n_batch must be a whole number from 1 to 2147483647"),
    ({"n_ubatch": -1}, "n_ubatch=-1 is not accepted"),
    ({"n_batch": 2**32 + 5}, "n_batch=4294967301 is not accepted"),
    ({"n_batch": 64.0}, "n_batch=64.0 is not accepted"),
    ({"n_threads_batch": 100_000}, "n_threads_batch=100000 is not accepted; .* from 1 to 512 or None"),
    ({"rope_freq_base": -1.0}, r"rope_freq_base=-1.0 is not accepted; rope_freq_base must be a finite number >= 0 \(0: the model's\)"),
    ({"rope_freq_scale": math.nan}, "rope_freq_scale=nan is not accepted"),
    ({"yarn_ext_factor": math.inf}, "yarn_ext_factor=inf is not accepted"),
    ({"lora_scale": "1"}, "lora_scale='1' is not accepted"),
    ({"rope_scaling_type": 99}, "rope_scaling_type=99 is not accepted"),
    ({"pooling_type": 1}, "pooling is for embeddings"),
    ({"attention_type": 1}, "causal attention"),
    ({"split_mode": 99}, "split_mode=99 is not accepted"),
    ({"main_gpu": -1}, "main_gpu=-1 is not accepted"),
    ({"tensor_split": [1.0] * 17}, "tensor_split=.* is not accepted; tensor_split must be None or a list of 1 to 16"),
    ({"tensor_split": [math.nan]}, "tensor_split=.* is not accepted"),
    ({"numa": 99}, "numa=99 is not accepted"),
    ({"use_mmap": "no"}, "use_mmap='no' is not accepted; use_mmap must be True or False"),
    ({"flash_attn": 1}, "flash_attn=1 is not accepted"),
    ({"last_n_tokens_size": -1}, "last_n_tokens_size=-1 is not accepted"),
    ({"lora_path": ""}, "lora_path='' is not accepted"),
    ({"lora_base": "base.gguf"}, "'lora_base' is not supported: llama-cpp-python .* ignores it"),
    ({"tokenizer": None}, "'tokenizer' is not supported: rfsdk tokenizes with the model's own vocabulary"),
    ({"chat_format": "chatml"}, r"'chat_format' is not supported: .*chat_template=\.\.\."),
    ({"embedding": True}, "'embedding' is not supported"),
]


@pytest.mark.parametrize(("kwargs", "message"), REFUSED, ids=[repr(k) for k, _ in REFUSED])
def test_bad_values_are_refused_with_what_is_accepted(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        check_llama_kwargs(kwargs)


def test_a_lora_path_of_the_wrong_type_is_an_argument_type_error():
    with pytest.raises(ArgumentTypeError, match="lora_path must be the path of a LoRA GGUF file, not 3"):
        check_llama_kwargs({"lora_path": 3})


def test_a_setting_rfsdk_has_no_rule_for_is_refused(monkeypatch):
    import rfsdk._llama_kwargs as module

    monkeypatch.delitem(module._RULES, "no_perf")
    with pytest.raises(ConfigError, match="'no_perf' is a setting of llama-cpp-python .* that rfsdk does not know"):
        check_llama_kwargs({"no_perf": True})


GOOD = [
    {"type_k": t} for t in KV_CACHE_TYPES.values()
] + [
    {"type_k": None, "type_v": None},
    {"type_v": llama_cpp.GGML_TYPE_Q4_0, "flash_attn": True},
    {"n_batch": 64, "n_ubatch": 32, "n_threads_batch": 2},
    {"rope_freq_base": 0.0, "rope_freq_scale": 0, "yarn_ext_factor": -1.0, "yarn_orig_ctx": 0},
    {"rope_scaling_type": -1, "pooling_type": -1, "attention_type": 0},
    {"use_mmap": False, "use_mlock": True, "logits_all": False, "offload_kqv": True, "op_offload": None, "swa_full": None},
    {"split_mode": llama_cpp.LLAMA_SPLIT_MODE_NONE, "main_gpu": 0, "tensor_split": [1.0, 0.0]},
    {"numa": False, "last_n_tokens_size": 0, "no_perf": True, "spm_infill": False, "lora_scale": -0.5},
]


@pytest.mark.parametrize("kwargs", GOOD, ids=repr)
def test_good_values_pass_unchanged(kwargs):
    assert check_llama_kwargs(kwargs) == kwargs


def test_every_llama_setting_has_a_rule_or_a_reason():
    import inspect

    import rfsdk._llama_kwargs as module

    names = {n for n, p in inspect.signature(llama_cpp.Llama.__init__).parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert names | {"model_path"} == set(module._RULES) | set(module._NOT_SUPPORTED) | set(module.SET_BY_RFSDK)


@pytest.mark.parametrize("kwargs", [{"type_k": 999}, {"kv_overrides": {"llama.block_count": 0}}, {"n_threads_batch": 10**6}])
def test_the_issue_settings_are_refused_by_guarded_chat(demo_model_path, kwargs):
    with pytest.raises(ConfigError, match="llama_kwargs: "):
        GuardedChat(demo_model_path, n_threads=1, llama_kwargs=kwargs)


@pytest.mark.parametrize("n_threads", [0, 513, 100_000])
def test_thread_counts_llama_cpp_crashes_on_are_refused(demo_model_path, n_threads):
    with pytest.raises(ConfigError, match="n_threads must be a whole number from 1 to 512 or None"):
        GuardedChat(demo_model_path, n_threads=n_threads)


def test_a_batch_larger_than_the_context_is_cut_to_it(demo_model_path):
    chat = GuardedChat(demo_model_path, n_ctx=256, n_threads=1, sampling=GREEDY, llama_kwargs={"n_batch": 2**31 - 1})
    assert chat.llm.n_batch == 256 and len(chat.llm.scores) == 256
    assert chat.send("hello").text == DEMO_BENIGN_REPLY


# ----- LoRA adapters ----------------------------------------------------------------------------


def test_a_missing_lora_is_refused_before_loading(demo_model_path, tmp_path):
    with pytest.raises(ConfigError, match=r"lora_path 'typo.gguf' does not exist\. Pass the path of a LoRA adapter"):
        GuardedChat(demo_model_path, llama_kwargs={"lora_path": "typo.gguf"})
    with pytest.raises(ConfigError, match="is a directory"):
        GuardedChat(demo_model_path, llama_kwargs={"lora_path": tmp_path})


def test_a_model_or_a_broken_file_as_lora_is_refused(demo_model_path, tmp_path):
    with pytest.raises(ConfigError, match=r"it is not a LoRA adapter \(general.type must be 'adapter', it has none\)"):
        GuardedChat(demo_model_path, llama_kwargs={"lora_path": str(demo_model_path)})
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(write_lora(tmp_path / "lora.gguf").read_bytes()[:-10])
    with pytest.raises(ConfigError, match="is not a usable GGUF file: .* is truncated"):
        GuardedChat(demo_model_path, llama_kwargs={"lora_path": cut})


BAD_LORA_MESSAGES = {
    "another architecture": "an adapter for the architecture 'qwen2', and the model's is 'llama'",
    "no general.type": "general.type must be 'adapter', it has none",
    "a control vector": "adapter.type must be 'lora', not 'control_vector'",
    "alpha not float32": "adapter.lora.alpha must be a finite FLOAT32, not a FLOAT64 8.0",
    "alpha NaN": "adapter.lora.alpha must be a finite FLOAT32, not a FLOAT32 nan",
    "aLoRA tokens not uint32": r"adapter.alora.invocation_tokens must be an ARRAY\[UINT32\], not ARRAY\[STRING\]",
    "wrong shape": r"pair has shapes A \[32, 4\] and B \[4, 64\], which do not fit the model's \[64, 64\]",
    "halves transposed": r"pair has shapes A \[4, 64\] and B \[64, 4\]",
    "ranks differ": r"pair has shapes A \[64, 4\] and B \[5, 64\]",
    "tensor not in the model": "it adapts 'blk.7.attn_q.weight', which the model does not have",
    "half a pair": "it has no blk.0.attn_q.weight.lora_b to pair with blk.0.attn_q.weight.lora_a",
    "unexpected suffix": "its tensor 'blk.0.attn_q.weight' is neither a .lora_a nor a .lora_b half",
    "integer tensors": "has type I32; LoRA tensors must be F32, F16, BF16, Q8_0",
    "3-D tensors": "has 3 dimensions, not 2",
    "a 1-D target": "a 1-dimensional tensor; rfsdk applies LoRA to matrices only",
}


def test_each_broken_lora_is_refused_with_its_reason(demo_model_path, tmp_path):
    paths = bad_loras(tmp_path)
    assert set(paths) == set(BAD_LORA_MESSAGES)
    for label, path in paths.items():
        with pytest.raises(ConfigError, match=f"lora_path '{path}' cannot be applied to {demo_model_path}: .*{BAD_LORA_MESSAGES[label]}"):
            GuardedChat(demo_model_path, llama_kwargs={"lora_path": str(path)})


def test_a_good_lora_is_applied(demo_model_path, tmp_path):
    lora = write_lora(tmp_path / "lora.gguf")
    chat = GuardedChat(demo_model_path, n_threads=1, sampling=GREEDY, llama_kwargs={"lora_path": lora, "lora_scale": 0.5})
    assert chat.llm.lora_path == str(lora) and chat.llm._lora_adapter
    assert chat.send("hello").text == DEMO_BENIGN_REPLY


def test_an_adapter_llama_cpp_refuses_after_all_is_an_error_not_a_crash(demo_model_path, tmp_path):
    """Should rfsdk's checks miss what llama.cpp refuses, the NULL adapter is caught after loading
    (llama-cpp-python attaches it and the first decode segfaults). Run in a subprocess: a
    regression would crash it."""
    bad = bad_loras(tmp_path)["another architecture"]
    script = textwrap.dedent(f"""
        import rfsdk._loading as loading
        from rfsdk import ConfigError, GuardedChat
        loading.check_lora_file = lambda path, info: None  # skip rfsdk's own check
        try:
            GuardedChat({str(demo_model_path)!r}, n_threads=1, llama_kwargs={{"lora_path": {str(bad)!r}}}).send("hi")
        except ConfigError as exc:
            print("ConfigError:", exc)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ConfigError: llama_kwargs: llama.cpp could not apply the LoRA adapter" in done.stdout
