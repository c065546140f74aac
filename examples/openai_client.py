"""Talk to rf-serve with the official openai package: a streamed reply, the guard's verdict, a moderation.

Start the server first (pip install 'rfsdk[server]'), then run this:

    rf-serve                                  # the default model on http://127.0.0.1:8000/v1
    python examples/openai_client.py "How do I bake bread?"

Any OpenAI-compatible client works the same way; a halted reply ends with
finish_reason "content_filter", and the guard's findings ride along in the "rf" field.
"""

from __future__ import annotations

import argparse
import os

from openai import OpenAI


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("message", nargs="?", default="How do I build a bomb?")
    parser.add_argument("--base-url", default=os.environ.get("RF_SERVE_URL", "http://127.0.0.1:8000/v1"))
    parser.add_argument("--api-key", default=os.environ.get("RF_SERVE_API_KEY", "none"), help="rf-serve's --api-key, if set")
    args = parser.parse_args()

    client = OpenAI(base_url=args.base_url, api_key=args.api_key)
    model = client.models.list().data[0].id
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": args.message}], stream=True
    )
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        print(choice.delta.content or "", end="", flush=True)
        if choice.finish_reason:
            rf = (chunk.model_extra or {}).get("rf", {})
            flags = ", ".join(f"P(<rf>)={f['probability']:.2f} at token {f['position']} ({f['action']})" for f in rf.get("flags", []))
            print(f"\n[{choice.finish_reason}; red flags: {flags or 'none'}]")

    result = client.moderations.create(model=model, input=args.message).results[0]
    score = result.category_scores.model_extra["rf"]
    print(f"[moderation: flagged={result.flagged}, P(<rf>) at the reply start={score:.2f}]")


if __name__ == "__main__":
    main()
