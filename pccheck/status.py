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

    def due(self, force: bool = False) -> bool:
        """Whether an update now would be written (a path, and forced or the interval passed)."""
        return self.path is not None and (force or time.monotonic() - self._last >= self.interval_s)

    def update(self, force: bool = False, **fields: Any) -> None:
        if not self.due(force):
            return
        self._last = time.monotonic()
        write_atomic(self.path, json.dumps({**fields, "time": time.time()}).encode(), durable=False)
