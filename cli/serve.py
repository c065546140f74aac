"""rf-serve: the guarded chat behind an OpenAI-compatible HTTP API."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import click

from rfsdk import RfsdkError, default_model

from .model_arg import resolve_model_arg

_EPILOG = """\b
Examples:
  rf-serve                                   the bundled model on http://127.0.0.1:8000/v1
  rf-serve -m model.gguf --api-key s3cret --policy continue
  rf-serve --classifier text --audit-log audit.jsonl
  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model": "MODEL", "messages": [{"role": "user", "content": "Hello!"}]}'

See docs/server.md for the endpoints and the guard's extension fields.
"""


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}, epilog=_EPILOG)
@click.option("--model", "-m", metavar="MODEL", help="GGUF file, hf://org/repo/file.gguf, or a Hugging Face repo id org/repo.  [default: the bundled model]")
@click.option("--model-file", metavar="FILE", help="With a repo id: which .gguf file of the repo.")
@click.option("--model-id", metavar="NAME", help="The model name clients send.  [default: the file name without .gguf]")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--api-key", envvar="RF_SERVE_API_KEY", metavar="KEY", help="Require 'Authorization: Bearer KEY' (also $RF_SERVE_API_KEY).")
@click.option("--policy", "-p", type=click.Choice(["halt", "continue"]), default="halt", show_default=True, help="What to do when the guard fires.")
@click.option("--threshold", "-t", type=click.FloatRange(0, 1, min_open=True), metavar="P", help="Fire when P(<rf>) >= P.  [default: the model's calibrated value, else 0.5]")
@click.option("--refusal", metavar="TEXT", help="The reply that replaces a halted one.  [default: rfsdk's]")
@click.option("--classifier", default="none", show_default=True, metavar="none|text|JUDGE.gguf", help="Cross-check the guard: the shipped text classifier, or a GGUF judge (Llama Guard 3).")
@click.option("--cross-check", type=click.Choice(["backstop", "confirm", "both"]), default="backstop", show_default=True, help="How the classifier cross-checks the guard.")
@click.option("--max-queue", type=click.IntRange(min=0), default=16, show_default=True, metavar="N", help="Requests that may wait for the model; more get 503 with Retry-After.")
@click.option("--max-body", type=click.IntRange(min=1024), default=1 << 20, show_default=True, metavar="BYTES", help="Largest request body.")
@click.option("--cors", multiple=True, metavar="ORIGIN", help="Allow browser pages from ORIGIN (repeatable).  [default: no CORS]")
@click.option("--audit-log", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE", help="Append one JSON line per flagged turn or moderation input.")
@click.option("--audit-text", is_flag=True, help="Also write the prompt and reply texts into the audit log.")
@click.option("--n-ctx", type=click.IntRange(min=64), help="Context size in tokens.  [default: the model's, at most 4096]")
@click.option("--threads", type=click.IntRange(min=1), metavar="N", help="CPU threads for llama.cpp, for generation and prompts.  [default: half the cores]")
@click.option("--n-gpu-layers", type=int, default=0, show_default=True, metavar="N", help="Layers to offload to a GPU (-1: all).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True)
@click.version_option(package_name="rfsdk", prog_name="rf-serve", message="%(prog)s %(version)s")
def main(
    model: str | None,
    model_file: str | None,
    model_id: str | None,
    host: str,
    port: int,
    api_key: str | None,
    policy: str,
    threshold: float | None,
    refusal: str | None,
    classifier: str,
    cross_check: str,
    max_queue: int,
    max_body: int,
    cors: tuple[str, ...],
    audit_log: Path | None,
    audit_text: bool,
    n_ctx: int | None,
    threads: int | None,
    n_gpu_layers: int,
    log_level: str,
) -> None:
    """Serve a <rf> model over the OpenAI chat API, every reply watched by the guard.

    Apps in any language use it as they use any OpenAI-compatible local server; a halted
    reply ends with finish_reason "content_filter" and no token of the flagged text.
    """
    if model_file is not None and model is None:
        raise click.UsageError("--model-file names a file of the repo given with --model org/repo.")
    if audit_text and audit_log is None:
        raise click.UsageError("--audit-text needs --audit-log FILE.")
    if api_key is not None and not api_key.isascii() or api_key == "":
        raise click.UsageError("--api-key must be non-empty ASCII text.")
    try:
        import uvicorn

        from rfsdk.server import AuditLog, GuardSettings, ServedModel, ServerState, TurnQueue, create_app
    except ImportError as exc:
        raise click.ClickException(f"rf-serve needs the server extra ({exc}): pip install 'rfsdk[server]'") from None
    if not _is_loopback(host) and api_key is None:
        click.echo(f"rf-serve: warning: listening on {host} without --api-key; anyone who reaches it can use the model.", err=True)
    try:
        path = default_model().path if model is None else resolve_model_arg(model, model_file)
        guard = GuardSettings(
            policy=policy,
            threshold=threshold,
            classifier=_classifier(classifier, threads),
            cross_check=cross_check,
            **({"refusal": refusal} if refusal else {}),
        )
        served = ServedModel(path, guard, model_id=model_id, n_ctx=n_ctx, n_threads=threads, n_gpu_layers=n_gpu_layers)
        audit = AuditLog(audit_log, with_text=audit_text) if audit_log is not None else None
    except (RfsdkError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    state = ServerState(model=served, queue=TurnQueue(max_queue), api_key=api_key, max_body=max_body, audit=audit, cors=list(cors))
    click.echo(f"rf-serve: serving {served.id!r} ({served.path}) on http://{host}:{port}/v1", err=True)
    uvicorn.run(create_app(state), host=host, port=port, log_level=log_level, access_log=log_level == "debug")


def _classifier(name: str, threads: int | None):  # noqa: ANN202 - a Classifier or None
    if name == "none":
        return None
    if name == "text":
        from rfsdk.classifiers import TextClassifier

        return TextClassifier.load()
    if not name.endswith(".gguf"):
        raise click.BadParameter(f"{name!r} is not none, text or a .gguf judge model.", param_hint="--classifier")
    from rfsdk.classifiers import LlamaJudge

    return LlamaJudge(resolve_model_arg(name), n_threads=threads)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    main()
