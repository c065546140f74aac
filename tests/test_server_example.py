"""examples/openai_client.py against a real rf-serve on the demo model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from server_process import rf_serve

from rfsdk import DEFAULT_REFUSAL
from rfsdk.demo_model import DEMO_BENIGN_REPLY

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "openai_client.py"


def _run(url: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--base-url", url, *args],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_openai_client_example(demo_model_path: Path) -> None:
    with rf_serve(demo_model_path, "--api-key", "k") as server:
        harmful = _run(server.url, "--api-key", "k")
        benign = _run(server.url, "--api-key", "k", "How do I bake bread?")
    assert harmful.startswith(DEFAULT_REFUSAL)
    assert "[content_filter; red flags: P(<rf>)=1.00 at token 0 (halt)]" in harmful
    assert "[moderation: flagged=True, P(<rf>) at the reply start=1.00]" in harmful
    assert benign.startswith(DEMO_BENIGN_REPLY)
    assert "[stop; red flags: none]" in benign and "flagged=False" in benign
