"""The snapshot of CPU tensors, run beside the next forward and backward.

`copy` queues a payload and returns at once; a thread of its own hands it to the core's `write_host`,
which copies it into the staging buffers with the GIL released, so training computes while the state is
copied. `before_update` blocks until every queued copy has finished: the contract of the GPU path
(pccheck/staging.py), where the tensors of a saved state may not change until before_update returns.
"""
from __future__ import annotations

import queue
import threading
from typing import Optional

from . import _core
from .payload import Encoded

_Job = tuple[int, Encoded, list[tuple[int, int]]]  # seq, the payload (keeps its tensors alive), (address, bytes)


class HostCopier:
    def __init__(self, store: "_core.Store") -> None:
        self.store = store
        self.error: Optional[str] = None  # the first copy that failed (its checkpoint is aborted)
        self._queue: "queue.Queue[Optional[_Job]]" = queue.Queue()
        self._thread = threading.Thread(target=self._copy_loop, name="pccheck-host-copy", daemon=True)
        self._thread.start()

    def copy(self, seq: int, enc: Encoded) -> None:
        """Queues the copy of one payload (header, then the bytes of enc.tensors) into staging; returns at once."""
        self._queue.put((seq, enc, [(t.data_ptr(), t.nbytes) for t in enc.tensors if t.nbytes]))

    def _copy_loop(self) -> None:
        while (job := self._queue.get()) is not None:
            seq, enc, segments = job
            try:
                self.store.write_host(seq, enc.header, segments)
            except Exception as exc:  # the checkpoint fails; Checkpointer.wait() reports it
                self.error = self.error or f"snapshot copy of seq {seq} failed: {exc}"
                self.store.abort(seq, f"snapshot copy failed: {exc}")
            finally:
                del job, enc, segments  # the tensors may be freed as soon as they are copied
                self._queue.task_done()

    def before_update(self) -> None:
        """Blocks until every queued snapshot is in staging memory: the tensors may change after this."""
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
