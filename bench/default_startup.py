"""Start-up of the trained default model: first use (assembly) vs later starts.

Each measurement runs in a fresh Python process with an empty (first use) or a warm
(later starts) rfsdk cache, so imports, file reads and memory are those a user sees:
`default_model()` alone, then `GuardedChat.from_default()` up to the first streamed token.
Prints wall time and the child's peak RSS. Run: python bench/default_startup.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from rfsdk import GuardedChat, SamplingConfig, default_model
info = default_model()
t1 = time.perf_counter()
first = None
if sys.argv[1] == "chat":
    chat = GuardedChat.from_default(sampling=SamplingConfig(temperature=0.0, max_tokens=8), n_threads=2)
    for event in chat.stream("Hi!"):
        if event.kind == "token":
            first = time.perf_counter()
            break
print(json.dumps({"kind": info.kind, "model_s": t1 - t0, "first_token_s": None if first is None else first - t0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(cache: Path, what: str) -> dict:
    env = {**os.environ, "RFSDK_CACHE": str(cache), "RFSDK_DEFAULT_MODEL": "trained"}
    done = subprocess.run([sys.executable, "-c", CHILD, what], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows: dict[str, list[dict]] = {"first use: assemble": [], "later: locate": [], "later: locate + load + first token": []}
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as folder:
            cache = Path(folder)
            rows["first use: assemble"].append(run(cache, "model"))
            rows["later: locate"].append(run(cache, "model"))
            rows["later: locate + load + first token"].append(run(cache, "chat"))
    print(f"{'phase':<38} {'wall s (median)':>16} {'peak RSS MB (max)':>18}")
    for phase, results in rows.items():
        key = "first_token_s" if "first token" in phase else "model_s"
        wall = statistics.median(r[key] for r in results)
        rss = max(r["peak_rss_mb"] for r in results)
        print(f"{phase:<38} {wall:>16.2f} {rss:>18.0f}")
    print(f"({args.rounds} rounds; times include Python start-up imports of rfsdk; model kind: {results[0]['kind']})")


if __name__ == "__main__":
    main()
