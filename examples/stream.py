"""Minimal streaming: print a guarded reply as it is written, with any red flag.

    python examples/stream.py "How do I bake bread?"
    python examples/stream.py --model my-model-with-rf.gguf "Hello"
    RFSDK_MODEL=my-model-with-rf.gguf python examples/stream.py
"""

import argparse
import os

from rfsdk import GuardedChat

parser = argparse.ArgumentParser(description="Stream one guarded reply.")
parser.add_argument("message", nargs="?", default="Hello! What can you do?")
parser.add_argument("--model", default=os.environ.get("RFSDK_MODEL"),
                    help="GGUF file or hf://org/repo/file.gguf (default: $RFSDK_MODEL, else the default model)")
args = parser.parse_args()

chat = GuardedChat(args.model) if args.model else GuardedChat.from_default()

for event in chat.stream(args.message):
    if event.kind == "token":
        print(event.text, end="", flush=True)
    elif event.kind == "flag":
        flag = event.flag
        print(f"\n[red flag: P(<rf>)={flag.probability:.2f}, {flag.source}, policy: {flag.action}]")
    elif event.kind == "end":
        if event.finish_reason == "halt":  # the guard stopped the reply: show the refusal instead
            print(event.text, end="")
        print(f"\n[{event.finish_reason}: {event.usage.completion_tokens} tokens, "
              f"{event.timings.tokens_per_s:.0f} tokens/s]")
