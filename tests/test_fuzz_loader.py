"""Loader fuzzing: mutated and truncated copies of the demo GGUF, each loaded with GuardedChat.

Every case is a copy of the demo model with byte patches and/or a truncation: structured
mutations of every header field, metadata value, array count, token text/type and tensor-info
entry (counts swapped, zeroed, off by one, huge; types changed; offsets misaligned; NaN/Inf
weights), plus seeded random byte flips, zeroed ranges and truncations in each region (header,
metadata, tensor infos, tensor data).

Each case runs ``GuardedChat(path)`` (with the case's ``llama_kwargs``, if any: see
test_fuzz_llama_kwargs.py) and one turn **in a subprocess** (this file run as a
script: ``python tests/test_fuzz_loader.py --worker CASES.json BASE.gguf SCRATCH``) so a native
crash or a hang in llama.cpp is caught instead of killing pytest. A worker runs many cases and
reports each one as a JSON line ("start" before, "done" with its outcome after), so when a worker
dies (negative return code = signal) or hangs (silent for ``CASE_TIMEOUT_S``), the case that
killed it is exactly the last one started, and a fresh worker resumes with the cases after it.

Allowed outcomes: a clear error of a class from :mod:`rfsdk.errors` at load time ("load:<Class>")
or at the first turn ("turn:<Class>"), or a working model that answers one turn ("ok": the demo's
benign reply; "ok-other": another complete reply, e.g. after a weight was changed; "turn:non-finite
logits, halted": a weight made the logits NaN or infinite and the guard halted the turn). Never a
signal, a hang, or a non-rfsdk Python exception. ``PINNED`` lists the cases that once crashed
or leaked another error, with the outcome each must have now.

CI mode runs ~900 cases (every header, count and pinned case, a fixed sample of the other
structured ones, ~100 random ones, boundary truncations) in ~5-30 s on 2 cores;
``pytest --long`` (or ``RFSDK_LONG_TESTS=1``) runs ~7,700 with a fresh random seed (0.5-4 minutes, with the CPU free or busy).
The outcome table is printed in the test's output.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import random
import struct
import subprocess
import sys
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# ----- the worker (runs in a subprocess) --------------------------------------------------------


def mutated_bytes(base: bytes, case: dict) -> bytes:
    """``base`` with a case's byte patches applied and, if it says so, truncated."""
    data = bytearray(base)
    for offset, hexbytes in case["patches"]:
        patch = bytes.fromhex(hexbytes)
        data[offset : offset + len(patch)] = patch
    if case["truncate"] is not None:
        del data[case["truncate"] :]
    return bytes(data)


def _worker(cases_file: str, base_file: str, scratch_dir: str) -> None:
    from rfsdk import GuardedChat, RfsdkError, SamplingConfig
    from rfsdk.demo_model import DEMO_BENIGN_REPLY

    base = Path(base_file).read_bytes()
    cases = json.loads(Path(cases_file).read_text())
    scratch = Path(scratch_dir)
    sampling = SamplingConfig(temperature=0.0, max_tokens=8)
    for n, case in enumerate(cases):
        print(json.dumps({"start": case["id"]}), flush=True)
        data = mutated_bytes(base, case)
        # A new file for every case (llama.cpp mmaps the last one), named by process: workers
        # run side by side in one scratch folder.
        path = scratch / f"case-{os.getpid()}-{n}.gguf"
        path.write_bytes(data)
        stage = "load"
        chat = None
        try:
            chat = GuardedChat(path, sampling=sampling, llama_kwargs=case.get("llama_kwargs"))
            stage = "turn"
            reply = chat.send("hello")
            ok = reply.finish_reason in ("stop", "length", "halt")
            outcome = "ok" if reply.text == DEMO_BENIGN_REPLY and ok else "ok-other"
            if not ok:
                outcome = f"turn-finish:{reply.finish_reason}"
            if reply.finish_reason == "error" and reply.flagged and "not a number" in (reply.error or ""):
                outcome = "turn:non-finite logits, halted"  # the guard fails closed
        except RfsdkError as exc:
            outcome = f"{stage}:{type(exc).__name__}"
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the test
            outcome = f"{stage}:UNEXPECTED {type(exc).__name__}: {str(exc)[:300]}"
        finally:
            # Free the model (and its mapping of the file) before the file goes.
            del chat
            path.unlink(missing_ok=True)
        print(json.dumps({"done": case["id"], "outcome": outcome}), flush=True)


# ----- case generation --------------------------------------------------------------------------

U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
F32 = struct.Struct("<f")


def _u32(v: int) -> str:
    return U32.pack(v & 0xFFFFFFFF).hex()


def _u64(v: int) -> str:
    return U64.pack(v & 0xFFFFFFFFFFFFFFFF).hex()


def _f32(v: float) -> str:
    return F32.pack(v).hex()


@dataclass
class Layout:
    size: int
    kv_start: int
    tinfo_start: int
    data_start: int
    # name -> (offset of the value / array count, value type, element type, element offsets)
    fields: dict[str, dict] = field(default_factory=dict)
    tensors: list[dict] = field(default_factory=list)


def _layout(path: Path) -> Layout:
    import gguf

    reader = gguf.GGUFReader(path)
    size = path.stat().st_size
    fields: dict[str, dict] = {}
    for f in reader.fields.values():
        sizes = [p.nbytes for p in f.parts]
        offs = [f.offset + sum(sizes[:i]) for i in range(len(sizes))]
        info = {"offset": f.offset, "parts": list(zip(offs, sizes)), "types": [int(t) for t in f.types]}
        fields[f.name] = info
    tensors = []
    for t in reader.tensors:
        sizes = [p.nbytes for p in t.field.parts]
        offs = [t.field.offset + sum(sizes[:i]) for i in range(len(sizes))]
        tensors.append(
            {
                "name": t.name,
                "parts": list(zip(offs, sizes)),
                "data_offset": int(t.data_offset),
                "n_bytes": int(t.n_bytes),
            }
        )
    kv_start = min(f["offset"] for n, f in fields.items() if not n.startswith("GGUF."))
    tinfo_start = min(t["parts"][0][0] for t in tensors)
    data_start = min(t["data_offset"] for t in tensors)
    return Layout(size, kv_start, tinfo_start, data_start, fields, tensors)


def _case(cases: list, cid: str, patches=(), truncate=None) -> None:
    cases.append({"id": cid, "patches": [list(p) for p in patches], "truncate": truncate})


def _structured_cases(lay: Layout, base: bytes) -> list[dict]:
    """Targeted mutations of every structural field of the file."""
    cases: list[dict] = []
    hdr = lay.fields
    version_off = hdr["GGUF.version"]["parts"][-1][0]
    nt_off = hdr["GGUF.tensor_count"]["parts"][-1][0]
    nkv_off = hdr["GGUF.kv_count"]["parts"][-1][0]
    n_tensors = U64.unpack_from(base, nt_off)[0]
    n_kv = U64.unpack_from(base, nkv_off)[0]
    _case(cases, "magic:GGUG", [(0, b"GGUG".hex())])
    _case(cases, "magic:zero", [(0, "00000000")])
    for v in (0, 1, 2, 4, 0x03000000, 0xFFFFFFFF):
        _case(cases, f"version={v:#x}", [(version_off, _u32(v))])
    for what, off, n in (("tensor_count", nt_off, n_tensors), ("kv_count", nkv_off, n_kv)):
        for v in (0, 1, n - 1, n + 1, 2 * n, 1 << 32, 1 << 62, (1 << 64) - 1):
            _case(cases, f"{what}={v:#x}", [(off, _u64(v))])
    _case(cases, "counts-swapped", [(nt_off, _u64(n_kv)), (nkv_off, _u64(n_tensors))])
    _case(cases, "counts-both-zero", [(nt_off, _u64(0)), (nkv_off, _u64(0))])

    for name, f in hdr.items():
        if name.startswith("GGUF."):
            continue
        (klen_off, _), _, (type_off, _) = f["parts"][:3]
        klen = U64.unpack_from(base, klen_off)[0]
        for v in (0, klen - 1, klen + 1, 1 << 40, (1 << 64) - 1):
            _case(cases, f"kv[{name}].key_len={v:#x}", [(klen_off, _u64(v))])
        for t in (0, 4, 5, 6, 7, 8, 9, 10, 12, 13, 255):
            if t != f["types"][0]:
                _case(cases, f"kv[{name}].type={t}", [(type_off, _u32(t))])
        if f["types"][0] == 9:  # array: element type, count, items
            (etype_off, _), (count_off, _) = f["parts"][3], f["parts"][4]
            count = U64.unpack_from(base, count_off)[0]
            for v in (0, 1, count - 1, count + 1, 1 << 33, (1 << 64) - 1):
                _case(cases, f"kv[{name}].count={v:#x}", [(count_off, _u64(v))])
            for t in (0, 4, 5, 6, 8, 9, 13):
                if t != f["types"][1]:
                    _case(cases, f"kv[{name}].elem_type={t}", [(etype_off, _u32(t))])
        elif f["types"][0] == 8:  # string value: its length
            slen_off = f["parts"][3][0]
            slen = U64.unpack_from(base, slen_off)[0]
            for v in (0, slen - 1, slen + 1, 1 << 40):
                _case(cases, f"kv[{name}].str_len={v:#x}", [(slen_off, _u64(v))])
            val_off = f["parts"][4][0]
            _case(cases, f"kv[{name}].invalid_utf8", [(val_off, "ff")])
            _case(cases, f"kv[{name}].open_tag", [(val_off, b"{%}".hex())])
            _case(cases, f"kv[{name}].nul", [(val_off + slen // 2, "00")])
        else:  # scalar
            val_off, val_size = f["parts"][3]
            if f["types"][0] == 6:
                for v in (0.0, -1.0, float("nan"), float("inf"), 1e30, 1e-30):
                    _case(cases, f"kv[{name}]={v}", [(val_off, _f32(v))])
            else:
                for v in (0, 1, 2, 3, 7, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF):
                    _case(cases, f"kv[{name}]={v:#x}", [(val_off, (v & ((1 << 8 * val_size) - 1)).to_bytes(val_size, "little").hex())])

    # token table: text of the special tokens and <rf>, their types
    toks = hdr["tokenizer.ggml.tokens"]
    # parts: klen, key, type, etype, count, then (len, bytes) per token
    items = toks["parts"][5:]
    n_vocab = len(items) // 2
    # n_vocab - 2: the last merged word, every prefix of which is a token too
    for tid in (0, 1, 2, n_vocab - 2, n_vocab - 1, 100):
        len_off, _ = items[2 * tid]
        txt_off, txt_size = items[2 * tid + 1]
        if txt_size:
            _case(cases, f"token[{tid}].text_changed", [(txt_off, "5a")])
            _case(cases, f"token[{tid}].text_nul", [(txt_off, "00")])
            _case(cases, f"token[{tid}].last_nul", [(txt_off + txt_size - 1, "00")])
        _case(cases, f"token[{tid}].len+1", [(len_off, _u64(txt_size + 1))])
        _case(cases, f"token[{tid}].len=0", [(len_off, _u64(0))])
    types = hdr["tokenizer.ggml.token_type"]["parts"][5:]
    for tid in (0, 1, 2, n_vocab - 1, 100):
        off, _ = types[tid]
        for t in (0, 1, 2, 4, 5, 6, 7, -1, 1 << 30):
            _case(cases, f"token_type[{tid}]={t}", [(off, _u32(t))])

    for t in lay.tensors:
        nlen_off = t["parts"][0][0]
        ndims_off = t["parts"][2][0]
        n_dims = U32.unpack_from(base, ndims_off)[0]
        dim_offs = [t["parts"][3][0] + 8 * i for i in range(n_dims)]
        type_off = t["parts"][4][0]
        off_off = t["parts"][5][0]
        name = t["name"]
        _case(cases, f"tensor[{name}].name_len+1", [(nlen_off, _u64(len(name) + 1))])
        _case(cases, f"tensor[{name}].name_changed", [(t["parts"][1][0], "5a")])
        for v in (0, 1, 2, 3, 4, 5, 0xFFFFFFFF):
            if v != n_dims:
                _case(cases, f"tensor[{name}].n_dims={v}", [(ndims_off, _u32(v))])
        for i, doff in enumerate(dim_offs):
            d = U64.unpack_from(base, doff)[0]
            for v in (0, 1, d // 2, d - 1, d + 1, 2 * d, 1 << 31, 1 << 62, (1 << 64) - 1):
                _case(cases, f"tensor[{name}].dim{i}={v:#x}", [(doff, _u64(v))])
        for v in (1, 2, 3, 6, 8, 10, 12, 14, 16, 20, 24, 26, 28, 30, 31, 34, 35, 39, 40, 1000, 0xFFFFFFFF):
            _case(cases, f"tensor[{name}].type={v}", [(type_off, _u32(v))])
        off = U64.unpack_from(base, off_off)[0]
        for v in (off + 1, off + 32, 0, 1 << 40, (1 << 64) - 32):
            _case(cases, f"tensor[{name}].offset={v:#x}", [(off_off, _u64(v))])
        # non-finite weights at the start of the tensor data
        for label, v in (("nan", float("nan")), ("inf", float("inf")), ("-inf", float("-inf")), ("huge", 3e38)):
            _case(cases, f"tensor[{name}].data[0]={label}", [(t["data_offset"], _f32(v) * 4)])
    return cases


def _region_of(lay: Layout, off: int) -> str:
    if off < lay.kv_start:
        return "header"
    if off >= lay.data_start:
        return "data"
    if off >= lay.tinfo_start:
        return "tinfo"
    for name, f in lay.fields.items():
        start = f["offset"]
        end = f["parts"][-1][0] + f["parts"][-1][1]
        if start <= off < end:
            return f"kv[{name}]"
    return "kv"


def _random_cases(lay: Layout, base: bytes, rng: random.Random, n: int) -> list[dict]:
    """Seeded random byte flips, zeroed ranges and truncations, spread over the four regions."""
    regions = {
        "header": (0, lay.kv_start),
        "kv": (lay.kv_start, lay.tinfo_start),
        "tinfo": (lay.tinfo_start, lay.data_start),
        "data": (lay.data_start, lay.size),
    }
    cases: list[dict] = []
    per = max(1, n // (3 * len(regions)))
    for region, (lo, hi) in regions.items():
        for i in range(per):
            k = rng.choice((1, 1, 2, 4, 16))
            patches = []
            for _ in range(k):
                off = rng.randrange(lo, hi)
                mask = rng.choice((1 << rng.randrange(8), 0xFF, rng.randrange(1, 256)))
                patches.append((off, bytes([base[off] ^ mask]).hex()))
            where = ",".join(sorted({_region_of(lay, off) for off, _ in patches}))
            _case(cases, f"flip:{region}:{i}:{k}@{where}", patches)
        for i in range(per):
            off = rng.randrange(lo, hi)
            length = min(hi - off, rng.choice((1, 4, 8, 16, 64, 512)))
            where = ",".join(sorted({_region_of(lay, o) for o in (off, off + length - 1)}))
            _case(cases, f"zero:{region}:{off}+{length}@{where}", [(off, "00" * length)])
        for i in range(per):
            _case(cases, f"truncate:{region}:{i}", truncate=rng.randrange(lo, hi))
    return cases


def _truncation_cases(lay: Layout, step: int) -> list[dict]:
    """Truncations at every structural boundary (and around it), plus every ``step`` bytes."""
    points = {0, 1, 3, 4, 5, 8, 16, 23, 24, lay.size - 1, lay.size - 4}
    for f in lay.fields.values():
        for off, size in f["parts"][:6]:
            points |= {off, off + 1, off + size - 1}
    for t in lay.tensors:
        for off, size in t["parts"]:
            points |= {off, off + size - 1}
        points |= {t["data_offset"], t["data_offset"] + t["n_bytes"] // 2, t["data_offset"] + t["n_bytes"] - 1}
    points |= set(range(0, lay.size, step))
    cases: list[dict] = []
    for p in sorted(x for x in points if 0 <= x < lay.size):
        _case(cases, f"truncate@{p}", truncate=p)
    return cases


def all_cases(base_path: Path, long: bool) -> list[dict]:
    """CI: every header/count case, a fixed sample of the other structured cases, ~100 random
    cases and ~80 truncations. Long: every structured case, 3000 random ones (a fresh seed each
    run, printed with the table; RFSDK_FUZZ_SEED=N repeats a run) and a truncation every 97 bytes."""
    base = base_path.read_bytes()
    lay = _layout(base_path)
    seed = int(os.environ.get("RFSDK_FUZZ_SEED", "0")) or (random.randrange(1 << 30) if long else 20250217)
    rng = random.Random(seed)
    structured = _structured_cases(lay, base)
    if not long:
        must = [c for c in structured if not c["id"].startswith(("kv[", "tensor[", "token")) or c["id"] in PINNED]
        rest = [c for c in structured if c not in must]
        structured = must + random.Random(seed).sample(rest, 260)
    cases = structured
    cases += _random_cases(lay, base, rng, 3000 if long else 100)
    cases += _truncation_cases(lay, step=97 if long else 1 << 30)
    # An id names its mutation, so a repeated id (e.g. count-1 == 1) is the same case again.
    unique: dict[str, dict] = {}
    for c in cases:
        unique.setdefault(c["id"], dict(c, seed=seed))
    return list(unique.values())


# ----- the runner (parent side) -----------------------------------------------------------------

ALLOWED_PREFIXES = ("ok", "ok-other", "load:", "turn:")
CASE_TIMEOUT_S = 60.0
"""A worker that reports nothing for this long is hung (loading one case takes ~0.05 s)."""


def _read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _run_worker(cases: list[dict], base: Path, scratch: Path, case_timeout: float) -> tuple[list[str], int | None, str]:
    """Run one worker on ``cases``; return its stdout lines, its exit status (None: hung) and stderr."""
    cases_file = scratch / f"cases-{uuid.uuid4().hex}.json"
    cases_file.write_text(json.dumps(cases))
    # GGML_NO_BACKTRACE: a failed GGML_ASSERT aborts at once instead of attaching gdb first.
    env = dict(os.environ, OMP_NUM_THREADS="1", GGML_NO_BACKTRACE="1")
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(cases_file), str(base), str(scratch)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
        out: list[str] = []
        rc: int | None = None
        while True:
            try:
                line = lines.get(timeout=case_timeout)
            except queue.Empty:
                proc.kill()
                proc.wait()
                break
            if line is None:
                rc = proc.wait()
                break
            out.append(line)
        err.seek(0)
        stderr = err.read()
    cases_file.unlink()
    return out, rc, stderr


def _run_chunk(cases: list[dict], base: Path, scratch: Path, case_timeout: float) -> dict[str, str]:
    outcomes: dict[str, str] = {}
    pending = list(cases)
    while pending:
        lines, rc, stderr = _run_worker(pending, base, scratch, case_timeout)
        started = None
        for line in lines:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "start" in msg:
                started = msg["start"]
            elif "done" in msg:
                outcomes[msg["done"]] = msg["outcome"]
                started = None
        remaining = [c for c in pending if c["id"] not in outcomes]
        if not remaining:
            break
        if rc == 0:
            raise AssertionError(f"worker exited cleanly with {len(remaining)} cases unreported: {stderr[-2000:]}")
        if started is None:
            raise AssertionError(f"worker died (rc={rc}) before starting a case: {stderr[-2000:]}")
        if rc is None:
            outcomes[started] = "HANG (timeout)"
        elif rc < 0:
            outcomes[started] = f"CRASH signal {-rc}"
        else:
            outcomes[started] = f"CRASH exit {rc}: {stderr.strip()[-300:]}"
        pending = [c for c in remaining if c["id"] != started]
    return outcomes


def run_cases(
    cases: list[dict], base: Path, scratch: Path, *, workers: int = 2, case_timeout: float = CASE_TIMEOUT_S
) -> dict[str, str]:
    """Run ``cases`` in worker subprocesses; return case id -> outcome (including signals and hangs).

    A worker that dies, or reports nothing for ``case_timeout`` seconds, is charged to the case
    it had started; a new worker resumes with the cases after it. ``workers`` chunks run side
    by side (one per core).
    """
    chunks = [c for c in (cases[i::workers] for i in range(workers)) if c]
    with ThreadPoolExecutor(workers) as pool:
        parts = pool.map(lambda chunk: _run_chunk(chunk, base, scratch, case_timeout), chunks)
    outcomes: dict[str, str] = {}
    for part in parts:
        outcomes.update(part)
    return outcomes


def _bad(outcome: str) -> bool:
    return "UNEXPECTED" in outcome or outcome.startswith(("CRASH", "HANG", "turn-finish"))


def outcome_table(outcomes: dict[str, str]) -> str:
    counts = collections.Counter(o.split(": ")[0] for o in outcomes.values())
    width = max(len(k) for k in counts)
    lines = [f"{len(outcomes)} loader-fuzz cases:"]
    lines += [f"  {k:<{width}}  {v:6d}" for k, v in counts.most_common()]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("loader-fuzz")


def test_base_case_works(demo_model_path, scratch):
    outcomes = run_cases([{"id": "unmodified", "patches": [], "truncate": None}], demo_model_path, scratch)
    assert outcomes == {"unmodified": "ok"}


def test_mutated_and_truncated_models_fail_cleanly(demo_model_path, scratch, long_mode, capsys):
    cases = all_cases(demo_model_path, long_mode)
    assert len({c["id"] for c in cases}) == len(cases)
    outcomes = run_cases(cases, demo_model_path, scratch)
    assert set(outcomes) == {c["id"] for c in cases}
    with capsys.disabled():
        print(f"\n(seed {cases[0]['seed']}) " + outcome_table(outcomes))
    bad = {cid: o for cid, o in outcomes.items() if _bad(o)}
    assert not bad, f"{len(bad)} cases ended badly:\n" + "\n".join(
        f"  {k}: {v}" for k, v in sorted(bad.items())[:60]
    )
    assert all(o.startswith(ALLOWED_PREFIXES) for o in outcomes.values())
    # the fuzz really reached the error paths and the working-model path
    assert any(o == "load:ModelFileError" for o in outcomes.values())
    assert any(o == "load:RfTokenTypeError" for o in outcomes.values())
    assert any(o == "ok" for o in outcomes.values())


@pytest.mark.parametrize("rc, outcome", [(-11, "CRASH signal 11"), (None, "HANG (timeout)")])
def test_a_dying_or_hanging_worker_is_charged_to_its_case(demo_model_path, scratch, monkeypatch, rc, outcome):
    """The harness itself: the case a worker had started when it died or hung gets the blame."""
    cases = [{"id": f"c{i}", "patches": [], "truncate": None} for i in range(3)]
    real_worker = _run_worker
    calls = []

    def fake_worker(pending, *args):
        calls.append([c["id"] for c in pending])
        if len(calls) == 1:  # the first worker finishes c0, then dies or hangs inside c1
            return ['{"start": "c0"}', '{"done": "c0", "outcome": "ok"}', '{"start": "c1"}'], rc, ""
        return real_worker(pending, *args)

    monkeypatch.setattr(sys.modules[__name__], "_run_worker", fake_worker)
    outcomes = run_cases(cases, demo_model_path, scratch, workers=1)
    assert outcomes == {"c0": "ok", "c1": outcome, "c2": "ok"}
    assert calls == [["c0", "c1", "c2"], ["c2"]]


def test_a_silent_worker_is_killed_after_the_case_timeout(demo_model_path, scratch):
    lines, rc, _ = _run_worker([{"id": "c0", "patches": [], "truncate": None}], demo_model_path, scratch, 0.001)
    assert rc is None and len(lines) <= 1


# ----- pinned cases: files that once crashed llama.cpp or leaked a non-rfsdk error -------------

PINNED = {
    # zero layers, or more than llama.cpp's maximum: llama.cpp aborted (SIGABRT)
    "kv[llama.block_count]=0x0": "load:ModelFileError",
    "kv[llama.block_count]=0xffff": "load:ModelFileError",
    # a NaN or negative norm epsilon: GGML_ASSERT(eps >= 0) aborted
    "kv[llama.attention.layer_norm_rms_epsilon]=nan": "load:ModelFileError",
    "kv[llama.attention.layer_norm_rms_epsilon]=-1.0": "load:ModelFileError",
    # integer weight tensors: llama.cpp segfaulted or aborted
    "tensor[blk.0.attn_q.weight].type=26": "load:ModelFileError",
    "tensor[blk.0.attn_norm.weight].type=26": "load:ModelFileError",
    "tensor[output.weight].type=24": "load:ModelFileError",
    # a token text changed into another token's: llama.cpp aborted on the duplicate
    "token[100].text_changed": "load:ModelFileError",
    # a NUL in a token text: llama.cpp cuts the text there ("bom\0"), into a duplicate of token 338
    "token[339].last_nul": "load:ModelFileError",
    # rf.threshold outside (0, 1]: a plain ValueError from the threshold setter
    "kv[rf.threshold]=nan": "load:ModelFileError",
    "kv[rf.threshold]=-1.0": "load:ModelFileError",
    "kv[rf.threshold]=inf": "load:ModelFileError",
    # a tiny training context: the context was not a multiple of 256, so llama-cpp-python's
    # token buffer was smaller than llama.cpp's context (ValueError in the turn); now it works
    "kv[llama.context_length]=0x2": "ok",
    "kv[llama.context_length]=0x7": "ok",
    # a training context >= 2**31: negative in llama.cpp's int32 (ValueError in tokenize)
    "kv[llama.context_length]=0xffffffff": "load:ModelFileError",
    # a training context of 2**31 - 1: llama-cpp-python's tokenize zero-filled an 8 GiB buffer
    # on every call (the worker hung); rfsdk tokenizes with a buffer that fits the text
    "kv[llama.context_length]=0x7fffffff": "ok",
    # a broken chat template: a raw jinja2 TemplateSyntaxError from inside llama-cpp-python
    "kv[tokenizer.chat_template].open_tag": "load:ChatTemplateError",
    "kv[tokenizer.chat_template].nul": "load:ChatTemplateError",
}


def test_pinned_cases_give_their_outcome(demo_model_path, scratch):
    cases = [c for c in _structured_cases(_layout(demo_model_path), demo_model_path.read_bytes()) if c["id"] in PINNED]
    assert {c["id"] for c in cases} == set(PINNED)
    assert run_cases(cases, demo_model_path, scratch) == PINNED


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--worker":
    _worker(sys.argv[2], sys.argv[3], sys.argv[4])
