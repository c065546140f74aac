"""Training in two processes (accelerate launch / torchrun, Gloo on CPU) equals one process."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the train extra is not installed")
pytest.importorskip("transformers", reason="the train extra is not installed")

WORKER = r'''
import random, sys
from pathlib import Path

import torch, transformers
from tokenizers import Tokenizer, models

from rfsdk.train.distributed import joined
from rfsdk.train.loop import TokenizedExample, TrainConfig, train
from rfsdk.train.rf_model import RfModel

torch.set_num_threads(1)
torch.manual_seed(0)
config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
model = transformers.LlamaForCausalLM(config)
tokenizer = transformers.PreTrainedTokenizerFast(
    tokenizer_object=Tokenizer(models.WordLevel({f"t{i}": i for i in range(64)}, unk_token="t0")), unk_token="t0")
rf = RfModel.prepare(model, tokenizer, rank=4, alpha=8)
rng = random.Random(0)
harmful = [TokenizedExample([1, 2, 3], [rng.randrange(40, 50) for _ in range(8)]) for _ in range(16)]
benign = [TokenizedExample([1, 2, 4], [rng.randrange(10, 20) for _ in range(8)]) for _ in range(16)]
out = Path(sys.argv[1])
with joined("cpu") as processes:
    history = train(rf, harmful, benign, TrainConfig(steps=int(sys.argv[2]), batch_size=3, lr=3e-3, rf_lr=3e-2,
                    checkpoint_every=2), out_dir=out / "run", processes=processes)
if processes.is_main:
    state = {n: p.detach().clone() for n, p in rf.model.named_parameters() if "lora" in n}
    state["rf_row"] = rf.rows[0].detach().clone()
    torch.save({"state": state, "history": history, "world": processes.world}, out / "result.pt")
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(launcher: list[str], out: Path, steps: int) -> dict:
    out.mkdir(exist_ok=True)
    script = out.parent / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    done = subprocess.run([*launcher, str(script), str(out), str(steps)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out / "result.pt", weights_only=False)


def _accelerate() -> list[str]:
    accelerate = shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("accelerate is not installed")
    return [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())]


def test_two_processes_under_accelerate_launch_train_like_one(tmp_path):
    one = _run([sys.executable], tmp_path / "one", steps=4)
    two = _run(_accelerate(), tmp_path / "two", steps=4)
    assert one["world"] == 1 and two["world"] == 2
    assert one["state"].keys() == two["state"].keys()
    for name, tensor in one["state"].items():
        assert torch.allclose(tensor, two["state"][name], atol=1e-5), name
    for mine, theirs in zip(one["history"], two["history"]):
        assert mine == pytest.approx(theirs, rel=1e-4)


def test_two_processes_resume_from_a_checkpoint_of_the_main_one(tmp_path):
    straight = _run([sys.executable], tmp_path / "straight", steps=4)
    resumed_dir = tmp_path / "resumed"
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port())],
         resumed_dir, steps=2)
    resumed = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "--master_port", str(_free_port())], resumed_dir, steps=4)
    assert len(resumed["history"]) == 2
    for name, tensor in straight["state"].items():
        assert torch.allclose(tensor, resumed["state"][name], atol=1e-5), name
