"""The snapshot path for tensors the C++ core cannot read directly (GPU memory): torch copies them into
the core's staging buffers, which are pinned, on a side stream; a thread hands each chunk to the core's
writers once its copy has finished. Training waits only on the GPU, through an event, before the optimizer
next changes the weights. The same code runs on the CPU (synchronous copies), which is how it is tested here.
"""
from __future__ import annotations

import contextlib
import queue
import threading
from typing import Optional

import torch

from . import _core
from .payload import Encoded


class StagedCopier:
    def __init__(self, store: "_core.Store", use_cuda: Optional[bool] = None) -> None:
        self.store = store
        self.chunk = int(store.geometry["chunk_size"])
        self.cuda = torch.cuda.is_available() if use_cuda is None else use_cuda
        self.stream = torch.cuda.Stream() if self.cuda else None
        self._views: dict[int, torch.Tensor] = {}
        self._last_event: Optional[torch.cuda.Event] = None
        self._queue: "queue.Queue[Optional[tuple]]" = queue.Queue()
        self._thread = threading.Thread(target=self._submit_loop, name="pccheck-submit", daemon=True)
        self._thread.start()

    def _buffer(self, index: int) -> torch.Tensor:
        view = self._views.get(index)
        if view is None:
            view = torch.frombuffer(self.store.buffer(index), dtype=torch.uint8)
            if self.cuda:  # pin once, so device-to-host copies run asynchronously at full bandwidth
                rc = torch.cuda.cudart().cudaHostRegister(self.store.buffer_address(index), self.chunk, 0)
                if int(rc) != 0:
                    raise RuntimeError(f"cudaHostRegister failed with error {int(rc)}")
            self._views[index] = view
        return view

    def copy(self, seq: int, enc: Encoded) -> None:
        """Issues the copies of one payload, chunk by chunk; returns when all are issued."""
        pieces = [torch.frombuffer(bytearray(enc.header), dtype=torch.uint8)]
        pieces += [t.reshape(-1).view(torch.uint8) for t in enc.tensors if t.nbytes]
        if self.stream is not None:
            self.stream.wait_stream(torch.cuda.current_stream())  # the tensors are final on the compute stream
            for piece in pieces:  # freed by the caller (encode's contiguous copies at once), a tensor's memory
                if piece.is_cuda:  # would go back to the compute stream while the side stream still reads it
                    piece.record_stream(self.stream)
        ctx = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        index: Optional[int] = None
        buf = pieces[0]
        fill = chunk_index = 0
        with ctx:
            for piece in pieces:
                offset = 0
                while offset < piece.numel():
                    if index is None:
                        index, fill = self.store.acquire(), 0
                        buf = self._buffer(index)
                    n = min(piece.numel() - offset, self.chunk - fill)
                    buf[fill : fill + n].copy_(piece[offset : offset + n], non_blocking=True)
                    fill, offset = fill + n, offset + n
                    if fill == self.chunk:
                        self._emit(seq, index, chunk_index, fill)
                        index, chunk_index = None, chunk_index + 1
            if index is not None:
                self._emit(seq, index, chunk_index, fill)

    def _emit(self, seq: int, index: int, chunk_index: int, nbytes: int) -> None:
        event = None
        if self.stream is not None:
            event = torch.cuda.Event()
            event.record(self.stream)
            self._last_event = event
        self._queue.put((seq, index, chunk_index, nbytes, event))

    def _submit_loop(self) -> None:
        while (item := self._queue.get()) is not None:
            seq, index, chunk_index, nbytes, event = item
            try:
                if event is not None:
                    event.synchronize()
                self.store.submit(seq, index, chunk_index, nbytes)
            except Exception as exc:  # the checkpoint fails; wait() reports it
                self.store.abort(seq, f"staging copy failed: {exc}")
            finally:
                self._queue.task_done()

    def before_update(self) -> None:
        """The compute stream waits (on the GPU, not the host) until the snapshot has been copied."""
        if self._last_event is not None:
            torch.cuda.current_stream().wait_event(self._last_event)
            self._last_event = None

    def drain(self) -> None:
        """Blocks until every issued chunk has been handed to the writers."""
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self.cuda:
            for index in self._views:
                torch.cuda.cudart().cudaHostUnregister(self.store.buffer_address(index))
        self._views.clear()
