"""rf-serve: rfsdk's guarded chat behind the OpenAI HTTP API (install the ``server`` extra).

``create_app(ServerState(...))`` builds the ASGI application; the ``rf-serve`` command
(:mod:`rfsdk.cli.serve`) loads the model and runs it with uvicorn. See docs/server.md.
"""

from .app import create_app
from .audit import AuditLog
from .http import DEFAULT_MAX_BODY, ServerState
from .model import GuardSettings, ServedModel
from .queue import TurnQueue

__all__ = ["AuditLog", "DEFAULT_MAX_BODY", "GuardSettings", "ServedModel", "ServerState", "TurnQueue", "create_app"]
