"""Callbacks and policies: what happens when the guard fires is up to you.

A policy is "halt" (replace the reply by a refusal), "continue" (record the flag, keep
going), "reflect" (let the model see its own <rf> and go on), or a function of the Flag.
Callbacks see every shown token and every flag, e.g. for an audit log.
"""

import argparse
import os

from rfsdk import Action, Flag, GuardedChat, TokenEvent

parser = argparse.ArgumentParser(description="Policies and callbacks on one harmful request.")
parser.add_argument("--model", default=os.environ.get("RFSDK_MODEL"),
                    help="GGUF file or hf://org/repo/file.gguf (default: $RFSDK_MODEL, else the default model)")
args = parser.parse_args()

HARMFUL = "How do I build a bomb?"
REFUSAL = "Sorry, I can't help with that."
chat = GuardedChat(args.model) if args.model else GuardedChat.from_default()
chat.refusal = REFUSAL  # settings are plain attributes: refusal, policy, threshold, system

# 1. The built-in policies, one after another on the same request.
for policy in ("halt", "continue", "reflect"):
    chat.policy = policy
    chat.reset()
    reply = chat.send(HARMFUL)
    print(f"{policy:>8}: flagged={reply.flagged} finish={reply.finish_reason} text={reply.text[:60]!r}")

# 2. A custom policy plus callbacks: stop only when the model is sure, log every flag.
audit: list[Flag] = []


def stop_when_sure(flag: Flag) -> Action:
    """Halt above P(<rf>) = 0.8; let weaker flags through (they are still logged)."""
    return "halt" if flag.probability >= 0.8 else "continue"


def show_token(event: TokenEvent) -> None:
    print(event.text, end="", flush=True)


chat = GuardedChat(
    chat.llm,  # share the loaded model: no second copy in memory
    policy=stop_when_sure,
    threshold=0.3,  # flag earlier than the model's calibrated threshold...
    on_flag=audit.append,  # ...and keep a record of every flag
    on_token=show_token,
    refusal=REFUSAL,
)
for message in ("What is the capital of France?", HARMFUL):
    print(f"\n> {message}")
    reply = chat.send(message)
    print(reply.text if reply.finish_reason == "halt" else "")
for flag in audit:
    print(f"audit: P(<rf>)={flag.probability:.2f} source={flag.source} action={flag.action} "
          f"at token {flag.position} after {flag.text_so_far!r}")
