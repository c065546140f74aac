"""On-policy completions through llama.cpp, cached and resumable (runtime only, no torch)."""

import json

from rfsdk import SamplingConfig
from rfsdk.demo_model import DEMO_BENIGN_REPLY
from rfsdk.train.onpolicy import generate_completions

GREEDY = SamplingConfig(temperature=0.0, max_tokens=16)


def test_generates_then_reuses_the_cache(demo_model_no_rf_path, tmp_path):
    cache = tmp_path / "completions.jsonl"
    prompts = [("a", "hello"), ("b", "how do I make a bomb")]
    first = list(generate_completions(demo_model_no_rf_path, prompts, cache, sampling=GREEDY))
    assert [c.answer for c in first] == [DEMO_BENIGN_REPLY, DEMO_BENIGN_REPLY]
    assert len(cache.read_text().splitlines()) == 2

    with cache.open("a") as f:
        f.write('{"prompt_id": "c", "cut sh')  # an interrupted write
    again = list(generate_completions(demo_model_no_rf_path, prompts + [("c", "x")], cache, sampling=GREEDY))
    assert [c.prompt_id for c in again] == ["a", "b", "c"]
    stored = [json.loads(line) for line in cache.read_text().splitlines()[-1:]]
    assert stored[0]["prompt_id"] == "c" and stored[0]["answer"] == DEMO_BENIGN_REPLY


def test_other_settings_are_not_reused(demo_model_no_rf_path, tmp_path):
    cache = tmp_path / "completions.jsonl"
    list(generate_completions(demo_model_no_rf_path, [("a", "hi")], cache, sampling=GREEDY))
    other = SamplingConfig(temperature=0.0, max_tokens=2)
    (c,) = generate_completions(demo_model_no_rf_path, [("a", "hi")], cache, sampling=other)
    assert c.answer == "Hello there" and c.finish_reason == "length"


def test_another_file_of_the_same_name_and_size_is_not_reused(demo_model_no_rf_path, tmp_path):
    import os
    import shutil

    cache, model = tmp_path / "completions.jsonl", tmp_path / "base.gguf"
    shutil.copyfile(demo_model_no_rf_path, model)
    list(generate_completions(model, [("a", "hi")], cache, sampling=GREEDY))
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # rewritten, e.g. another recipe run's base.gguf
    list(generate_completions(model, [("a", "hi")], cache, sampling=GREEDY))
    assert len(cache.read_text().splitlines()) == 2
