"""rf-convert hf against llama.cpp's convert_hf_to_gguf.py on one checkpoint, side by side.

For each output type both converters run as child processes on the same HF folder; the table
gives each one's wall time and peak RSS (from the child's own rusage), then whether the two
files agree: tensor names, shapes, storage types and bytes, the tokenizer arrays, and
llama.cpp's tokenization of the verify corpus. The reference converter is read from the
llama-cpp-python source distribution (``pip download llama-cpp-python==0.3.36 --no-deps
--no-binary :all:``, unpacked; it is ``vendor/llama.cpp/convert_hf_to_gguf.py``).

    python bench/convert_peer.py /tmp/smollm2-rf --reference /tmp/lcp-sdist/.../convert_hf_to_gguf.py
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rfsdk.convert.reader import field_value, open_gguf
from rfsdk.convert.verify_texts import CORPUS, PROMPTS

_OURS = "from rfsdk.cli.convert import main; main()"
_LAUNCH = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"
)
_TOKENIZER_KEYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")


def run_child(argv: list[str]) -> tuple[float, float]:
    """Run ``argv`` to completion; (wall seconds, peak RSS in MB) of that child alone.

    A small launcher process starts it, so the child's peak RSS does not inherit this
    (larger) process's high-water mark through fork.
    """
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCH, *argv], capture_output=True, check=False
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed ({done.returncode}):\n{done.stderr.decode(errors='replace')[-2000:]}")
    return wall, float(done.stdout.decode().split()[-1]) / 1024  # KiB on Linux


def compare_tensors(ours: Path, theirs: Path) -> tuple[str, str, str]:
    """(names, shapes and types, data) agreement of the two files, each as a short verdict."""
    a = {t.name: t for t in open_gguf(ours).tensors}
    b = {t.name: t for t in open_gguf(theirs).tensors}
    if set(a) != set(b):
        return f"differ: only ours {sorted(set(a) - set(b))[:3]}, only theirs {sorted(set(b) - set(a))[:3]}", "-", "-"
    shapes = [n for n in a if list(a[n].shape) != list(b[n].shape) or a[n].tensor_type != b[n].tensor_type]
    data = [n for n in a if n not in shapes and not np.array_equal(np.asarray(a[n].data), np.asarray(b[n].data))]
    worst = max(
        (float(np.abs(np.asarray(a[n].data, np.float32) - np.asarray(b[n].data, np.float32)).max()) for n in data),
        default=0.0,
    )
    return (
        f"same ({len(a)})",
        "same" if not shapes else f"{len(shapes)} differ, e.g. {shapes[0]}",
        "identical bytes" if not data else f"{len(data)} tensors differ, max |diff| {worst:.3g}",
    )


def compare_tokenizer(ours: Path, theirs: Path) -> tuple[str, str]:
    """(tokenizer metadata, tokenization of the verify corpus and prompts) agreement."""
    import llama_cpp

    ra, rb = open_gguf(ours), open_gguf(theirs)
    differ = [k.rsplit(".", 1)[1] for k in _TOKENIZER_KEYS if field_value(ra, k) != field_value(rb, k)]
    pre = (field_value(ra, "tokenizer.ggml.pre"), field_value(rb, "tokenizer.ggml.pre"))
    meta = "tokens, types, merges identical" if not differ else f"differ: {', '.join(differ)}"
    meta += f"; pre {pre[0]} / {pre[1]}"
    texts = [*CORPUS, *PROMPTS]
    la, lb = (llama_cpp.Llama(str(p), vocab_only=True, verbose=False) for p in (ours, theirs))
    same = sum(la.tokenize(t.encode(), add_bos=False, special=True) == lb.tokenize(t.encode(), add_bos=False, special=True) for t in texts)
    return meta, f"{same}/{len(texts)} texts identical"


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="HF checkpoint folder (with <rf> in its tokenizer)")
    parser.add_argument("--reference", type=Path, required=True, help="llama.cpp's convert_hf_to_gguf.py")
    parser.add_argument("--outtypes", default="f32,f16")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="convert-peer-", dir="/tmp") as tmp:
        for outtype in args.outtypes.split(","):
            ours, theirs = Path(tmp) / f"ours-{outtype}.gguf", Path(tmp) / f"theirs-{outtype}.gguf"
            t_ours = run_child([sys.executable, "-c", _OURS, "hf", str(args.src), str(ours), "--outtype", outtype, "-q"])
            t_theirs = run_child(
                [sys.executable, str(args.reference), str(args.src), "--outfile", str(theirs), "--outtype", outtype]
            )
            names, shapes, data = compare_tensors(ours, theirs)
            meta, tokens = compare_tokenizer(ours, theirs)
            rows.append((outtype, t_ours, t_theirs, names, shapes, data, meta, tokens))
            ours.unlink()
            theirs.unlink()
    print("| outtype | rf-convert hf s / peak MB | convert_hf_to_gguf.py s / peak MB | tensor names | shapes, types | data | tokenizer metadata | tokenization |")
    print("|---|---:|---:|---|---|---|---|---|")
    for outtype, (wa, ma), (wb, mb), *verdicts in rows:
        print(f"| {outtype} | {wa:.1f} / {ma:.0f} | {wb:.1f} / {mb:.0f} | " + " | ".join(verdicts) + " |")
    print(f"\npeak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
