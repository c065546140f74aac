"""Edge devices: CPU threads, GPU offload, and memory bounded by the context size.

    python examples/edge.py --threads 4 --n-ctx 1024          # a small CPU box
    python examples/edge.py --low-ram                          # squeeze memory further
    python examples/edge.py --gpu-layers -1                    # all layers on the GPU

Memory is the model file plus a KV cache that grows with ``n_ctx``. The file is
memory-mapped (``use_mmap``): its pages are shared and the OS can drop them under
pressure, so a model larger than free RAM still runs (more slowly). ``--mlock`` pins
it instead (no paging, needs the RAM). With a small context a long conversation keeps
working: the oldest messages are left out of the prompt (a "notice" event says so).

GuardedChat takes n_ctx, n_threads and n_gpu_layers itself and passes any other llama.cpp
setting through ``llama_kwargs``, as here (the file is still checked before llama.cpp loads it).
"""

import argparse
import os
import resource
import sys

import llama_cpp

from rfsdk import GuardedChat, SamplingConfig, default_model_path

parser = argparse.ArgumentParser(description="Guarded chat with edge settings.")
parser.add_argument("--model", default=os.environ.get("RFSDK_MODEL"),
                    help="GGUF file or hf://org/repo/file.gguf (default: $RFSDK_MODEL, else the default model)")
parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                    help="CPU threads (default: half the logical CPUs; more than the free cores slows it down)")
parser.add_argument("--gpu-layers", type=int, default=0, help="layers to offload to a GPU (-1: all)")
parser.add_argument("--n-ctx", type=int, default=1024, help="context size in tokens (bounds the KV cache)")
parser.add_argument("--low-ram", action="store_true",
                    help="n_ctx 512, small batches, 8-bit KV cache (about half the KV memory)")
parser.add_argument("--no-mmap", action="store_true", help="read the whole file into RAM instead of mapping it")
parser.add_argument("--mlock", action="store_true", help="pin the model in RAM (never paged out)")
parser.add_argument("--max-tokens", type=int, default=128, help="longest reply, in tokens")
parser.add_argument("--turns", type=int, default=6, help="how many messages to send")
args = parser.parse_args()

gpu_layers = args.gpu_layers
if gpu_layers and not llama_cpp.llama_supports_gpu_offload():
    print("warning: this llama-cpp-python build has no GPU support, running on the CPU. Reinstall it "
          'with CMAKE_ARGS="-DGGML_CUDA=on" (or -DGGML_METAL=on, -DGGML_VULKAN=on) to offload.',
          file=sys.stderr)
    gpu_layers = 0

low_ram = {"n_batch": 64, "type_k": llama_cpp.GGML_TYPE_Q8_0, "type_v": llama_cpp.GGML_TYPE_Q8_0, "flash_attn": True}
chat = GuardedChat(
    args.model or default_model_path(),  # the guard reads <rf>, its threshold and the chat template from the file
    n_ctx=min(args.n_ctx, 512) if args.low_ram else args.n_ctx,
    n_threads=args.threads,
    n_gpu_layers=gpu_layers,
    llama_kwargs={"use_mmap": not args.no_mmap, "use_mlock": args.mlock, **(low_ram if args.low_ram else {})},
    overflow="truncate",  # drop the oldest messages rather than fail when the context is full
    sampling=SamplingConfig(temperature=0.0, max_tokens=args.max_tokens),  # greedy: repeatable
)
llm = chat.llm


def peak_memory_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


print(f"threads={args.threads} gpu_layers={gpu_layers} n_ctx={llm.n_ctx()} n_batch={llm.n_batch} "
      f"mmap={not args.no_mmap} mlock={args.mlock} kv_8bit={args.low_ram}")
for turn in range(1, args.turns + 1):
    message = f"Message {turn}: tell me something new about the sea."
    for event in chat.stream(message):
        if event.kind == "notice":
            print(f"  note: {event.message}")
        elif event.kind == "end":
            print(f"turn {turn}: {event.usage.prompt_tokens} prompt + {event.usage.completion_tokens} "
                  f"reply tokens, {event.timings.tokens_per_s:.0f} tokens/s, {event.finish_reason}"
                  f"{', flagged' if event.flagged else ''}")
print(f"peak memory: {peak_memory_mib():.0f} MiB")
