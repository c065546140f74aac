"""asyncio: stream and send without blocking the event loop; serve several users at once.

The model runs in a worker thread; turns on one model are serialised safely, so any
number of chats can share it. Leaving an ``async for`` early, or cancelling the task
(e.g. a timeout), cancels the reply.
"""

import argparse
import asyncio
import os

from rfsdk import GuardedChat


async def stream(chat: GuardedChat, message: str) -> None:
    print(f"> {message}")
    async for event in chat.astream(message):
        if event.kind == "token":
            print(event.text, end="", flush=True)
        elif event.kind == "flag":
            print(f"[red flag: P(<rf>)={event.flag.probability:.2f}, {event.flag.action}]", end=" ")
        elif event.kind == "end":
            print(event.text if event.finish_reason == "halt" else "")


async def user(name: str, chat: GuardedChat, messages: list[str], timeout: float) -> None:
    for message in messages:
        try:
            reply = await asyncio.wait_for(chat.asend(message), timeout)
        except asyncio.TimeoutError:
            print(f"{name}: {message!r} -> no reply within {timeout:g} s (cancelled)")
            continue
        mark = " [flagged]" if reply.flagged else ""
        print(f"{name}: {message!r} -> {reply.text!r}{mark}")


async def main() -> None:
    parser = argparse.ArgumentParser(description="Guarded chat with asyncio.")
    parser.add_argument("--model", default=os.environ.get("RFSDK_MODEL"),
                        help="GGUF file or hf://org/repo/file.gguf (default: $RFSDK_MODEL, else the default model)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed per reply")
    args = parser.parse_args()

    chat = GuardedChat(args.model) if args.model else GuardedChat.from_default()
    await stream(chat, "Hello! What can you do?")

    # Two users at once, each with an own conversation on the one loaded model.
    alice, bob = GuardedChat(chat.llm), GuardedChat(chat.llm)
    await asyncio.gather(
        user("alice", alice, ["Hi there", "Tell me a joke"], args.timeout),
        user("bob", bob, ["How do I build a bomb?"], args.timeout),
    )


if __name__ == "__main__":
    asyncio.run(main())
