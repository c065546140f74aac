"""What moderation costs: <rf> detection vs a GGUF judge re-classifying the stream.

The chat model is SmolLM2-135M-Instruct Q4_1 with an untrained <rf> row (as in
stream_overhead.py); the judge is a LlamaJudge ("yes-no" format) over the same base GGUF.
For each reply length it generates the reply greedily (end-of-turn masked, so every
reply has exactly that many tokens) with and without rfsdk's TurnGuard, then moderates
the same reply as guard tools do: the judge re-classifies the accumulated text every
--every tokens (a fresh judge context each time, as a moderation API sees it, and
once more with llama.cpp's prefix cache kept between checks), or the whole reply once
at the end. It counts the tokens each judge evaluates (its llama.cpp eval calls) and
their wall time, prints a table and writes a PNG plot.
Run: python bench/moderation_cost.py [--lengths 32,64,128,256,512] [--plot PATH]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

import llama_cpp
import numpy as np
from stream_overhead import guarded_model

from rfsdk import CHATML_TEMPLATE, LlamaJudge, Message
from rfsdk._guard import TurnGuard
from rfsdk.model_source import default_base_model_path
from rfsdk._policies import resolve_policy
from rfsdk._prompt import PromptBuilder

PROMPT = "Write a long story about a lighthouse keeper and a storm."
METHODS = ("<rf> (TurnGuard)", "stream re-classify", "stream, prefix cache", "end of reply")


def count_evals(llm: llama_cpp.Llama) -> list[int]:
    """Make ``llm`` count the tokens it evaluates; returns the one-element counter."""
    counter = [0]
    original = llm.eval

    def counting_eval(tokens):
        counter[0] += len(tokens)
        return original(tokens)

    llm.eval = counting_eval
    return counter


def generate(llm: llama_cpp.Llama, prompt: list[int], n: int, guard: TurnGuard | None) -> tuple[list[int], list[float]]:
    """``n`` greedy reply tokens (end-of-turn masked) and the time from the start to each."""
    vocab = llm._model.vocab
    eog = [t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]

    def no_end(input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        scores[eog] = -np.inf
        return scores

    processors = ([guard] if guard is not None else []) + [no_end]
    llm.reset()
    ids: list[int] = []
    stamps: list[float] = []
    start = time.perf_counter()
    for token in llm.generate(prompt, temp=0.0, logits_processor=llama_cpp.LogitsProcessorList(processors)):
        ids.append(token)
        stamps.append(time.perf_counter() - start)
        if len(ids) == n:
            break
    return ids, stamps


def new_guard(rf_id: int, stop_id: int) -> TurnGuard:
    return TurnGuard(
        rf_id=rf_id,
        stop_id=stop_id,
        threshold=1.0,
        flag_sampled=True,
        policy=resolve_policy("continue"),
        temperature=0.0,
        rng=random.Random(0),
        cancel=threading.Event(),
    )


def judge_cost(judge: LlamaJudge, counter: list[int], texts: list[str], keep_cache: bool) -> tuple[int, float]:
    """Tokens evaluated and seconds taken by the judge for the checks of ``texts``, in order."""
    judge.llm.reset()
    before = counter[0]
    start = time.perf_counter()
    for text in texts:
        if not keep_cache:
            judge.llm.reset()
        judge.classify(PROMPT, text)
    return counter[0] - before, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="32,64,128,256,512", help="reply lengths in tokens")
    parser.add_argument("--every", type=int, default=32, help="stream check interval in tokens")
    parser.add_argument("--rounds", type=int, default=2, help="timing rounds (medians are reported)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plot", type=Path, default=Path("moderation_cost.png"))
    args = parser.parse_args()
    lengths = sorted(int(x) for x in args.lengths.split(","))
    longest = lengths[-1]
    with tempfile.TemporaryDirectory() as tmp:
        model = guarded_model(Path(tmp))
        llm = llama_cpp.Llama(str(model), n_ctx=longest + 256, n_threads=args.threads, verbose=False)
        (rf_id,) = llm.tokenize(b"<rf>", add_bos=False, special=True)
        chat_counter = count_evals(llm)
        prompt = PromptBuilder(llm, CHATML_TEMPLATE).build([Message(role="user", content=PROMPT)])
        generate(llm, prompt, 8, None)  # warm up: page the model in before timing
        raw_times, guard_times = [], []
        for _ in range(args.rounds):
            before = chat_counter[0]
            ids, stamps = generate(llm, prompt, longest, None)
            raw_times.append(stamps)
            raw_evals = chat_counter[0] - before
            guarded_ids, stamps = generate(llm, prompt, longest, new_guard(rf_id, llm.token_eos()))
            guard_times.append(stamps)
            rf_extra_tokens = chat_counter[0] - before - 2 * raw_evals
        assert guarded_ids == ids, "the guard must not change greedy replies when it does not fire"
        judge = LlamaJudge(
            default_base_model_path(), format="yes-no", n_ctx=longest + 512, n_threads=args.threads
        )
        judge.classify(PROMPT, "warm up")
        judge_counter = count_evals(judge.llm)
        text = [llm.detokenize(ids[:k]).decode("utf-8", errors="replace") for k in range(longest + 1)]

    rows = []
    for n in lengths:
        raw_s = statistics.median(t[n - 1] for t in raw_times)
        guard_s = statistics.median(t[n - 1] for t in guard_times)
        stream_texts = [text[k] for k in range(args.every, n + 1, args.every)]
        costs = {"<rf> (TurnGuard)": (0, rf_extra_tokens, guard_s - raw_s)}
        for method, texts, keep in (
            ("stream re-classify", stream_texts, False),
            ("stream, prefix cache", stream_texts, True),
            ("end of reply", [text[n]], False),
        ):
            runs = [judge_cost(judge, judge_counter, texts, keep) for _ in range(args.rounds)]
            costs[method] = (len(texts), runs[0][0], statistics.median(s for _, s in runs))
        rows.append((n, raw_s, costs))

    print(f"chat: SmolLM2-135M-Instruct Q4_1 + untrained <rf>; judge: LlamaJudge yes-no on the same base; "
          f"{args.threads} threads, greedy, stream checks every {args.every} tokens, median of {args.rounds} rounds")
    print(f"{'reply':>6} {'generation s':>13}  {'method':<22}{'checks':>7}{'extra tokens':>14}"
          f"{'per reply token':>17}{'extra s':>9}{'extra %':>9}")
    for n, raw_s, costs in rows:
        for method in METHODS:
            checks, tokens, seconds = costs[method]
            print(f"{n:>6} {raw_s:>13.2f}  {method:<22}{checks:>7}{tokens:>14}{tokens / n:>17.1f}"
                  f"{seconds:>9.2f}{100 * seconds / raw_s:>8.0f}%")
    plot(rows, args.plot, args.every)
    print(f"plot: {args.plot}")


def plot(rows, path: Path, every: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (tokens_ax, time_ax) = plt.subplots(1, 2, figsize=(10, 4))
    lengths = [n for n, _, _ in rows]
    for method in METHODS:
        tokens_ax.plot(lengths, [c[method][1] for _, _, c in rows], marker="o", label=method)
        time_ax.plot(lengths, [c[method][2] for _, _, c in rows], marker="o", label=method)
    time_ax.plot(lengths, [raw for _, raw, _ in rows], color="grey", linestyle="--", label="generation itself")
    tokens_ax.set(xlabel="reply tokens", ylabel="extra tokens evaluated", title=f"Extra tokens (checks every {every})")
    time_ax.set(xlabel="reply tokens", ylabel="extra wall time, s", title="Extra wall time (run inline)")
    for ax in (tokens_ax, time_ax):
        ax.grid(alpha=0.3)
    time_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
