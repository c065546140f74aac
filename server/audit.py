"""rf-serve's --audit-log: one JSON line per flagged turn."""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


class AuditLog:
    """Appends one JSON record per line to ``path``; the reply text only if ``with_text``."""

    def __init__(self, path: str | os.PathLike, *, with_text: bool = False) -> None:
        self.path = Path(path)
        self.with_text = with_text
        self._lock = threading.Lock()
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any], *, text: dict[str, str] | None = None) -> None:
        """Append ``record`` with the time (UTC, ISO 8601) first, and ``text`` if texts are logged."""
        line = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), **record}
        if self.with_text and text:
            line.update(text)
        data = json.dumps(line, ensure_ascii=False) + "\n"
        with self._lock:
            self._file.write(data)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()
