"""A small JSON status file, rewritten atomically, for followers such as pccheck-submit's live view."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

from .fsutil import write_atomic


class StatusFile:
    def __init__(self, path: Optional[Path], interval_s: float = 0.5) -> None:
        self.path = Path(path) if path else None
        self.interval_s = interval_s
        self._last = 0.0

    def update(self, force: bool = False, **fields: Any) -> None:
        if self.path is None:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        write_atomic(self.path, json.dumps({**fields, "time": time.time()}).encode(), durable=False)
