"""pccheck-train: trains a GPT-style language model with pluggable checkpointing and bit-exact resume.

Exit status: 0 all steps done; 75 stopped at a step boundary after a durable checkpoint (requeue me);
2 a user error (one line on stderr); 1 any other failure.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

# Set before torch loads MKL: with dynamic threading MKL may use fewer threads than asked when the machine
# is busy, which changes the summation order and so the loss trace (seen once under load with 2 threads).
os.environ.setdefault("MKL_DYNAMIC", "FALSE")
os.environ.setdefault("OMP_DYNAMIC", "FALSE")

import torch  # noqa: E402

from . import distributed, trainstate
from .cli import OneLineParser, int_at_least
from .checkpointing import CheckpointerLike, SaveHandle
from .data import VOCAB, TokenSource
from .distributed import Distributed
from .errors import CheckpointError, UserError
from .lossfile import LossFile
from .model import GPT, ModelConfig
from .progress import TrainProgress
from .schedule import warmup_cosine
from .sizes import parse_size
from .status import StatusFile
from .stopping import StopPolicy, default_policy, ignore_stop_signals

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_REQUEUE = 0, 1, 2, 75
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class RunResult:
    status: str  # "completed" | "stopped"
    step: int
    reason: str
    last_committed_step: Optional[int]
    resumed_from: Optional[int]


_positive = int_at_least(1)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="pccheck-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    t = p.add_argument_group("training")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--training-steps", type=_positive, default=151)
    t.add_argument("--batch-size", type=_positive, default=8)
    t.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW)")
    t.add_argument("--warmup-steps", type=int, default=None, help="default: 10%% of --training-steps")
    t.add_argument("--weight-decay", type=float, default=0.1)
    t.add_argument("--dataset", default=None, help="a local text file (byte tokens); default: synthetic stream from --seed")
    t.add_argument("--loss-file", default=None, help="CSV `step,loss`, one row per completed step")
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    t.add_argument("--threads", type=_positive, default=None, help="torch intra-op threads (default: torch's choice)")
    t.add_argument("--fail-at-step", type=_positive, default=None, help="SIGKILL this process right after step N")
    t.add_argument("--status-file", default=None, help="JSON progress file for followers (pccheck-submit)")
    m = p.add_argument_group("model")
    m.add_argument("--model-dtype", choices=sorted(DTYPES), default="fp32")
    m.add_argument("--sequence-length", type=_positive, default=128)
    m.add_argument("--d-model", type=_positive, default=None, help="model dimension (default: the sequence length)")
    m.add_argument("--n-layers", type=_positive, default=2)
    m.add_argument("--n-heads", type=_positive, default=4)
    m.add_argument("--dropout", type=float, default=0.1)
    c = p.add_argument_group("checkpointing")
    c.add_argument("--checkpointer", choices=["none", "torchsave", "pccheck"], default="pccheck")
    c.add_argument("--checkpoint-dir", default="checkpoints")
    c.add_argument("--checkpoint-freq", type=_positive, default=50, help="checkpoint every N steps")
    c.add_argument("--load-checkpoint", action="store_true", help="resume from the newest valid checkpoint")
    c.add_argument("--keep", type=_positive, default=2, help="committed checkpoints kept")
    c.add_argument("--max-async", type=_positive, default=2, help="pccheck: checkpoints in flight at once")
    c.add_argument("--writer-threads", type=_positive, default=2, help="pccheck: writer threads")
    c.add_argument("--chunk-size", type=parse_size, default=parse_size("8M"), help="pccheck: write chunk (e.g. 8M)")
    c.add_argument("--memory-budget", type=parse_size, default=None, help="pccheck: staging memory (default: one state)")
    c.add_argument("--durability", choices=["auto", "fdatasync", "direct"], default=None,
                   help="pccheck: direct = O_DIRECT + fdatasync, fdatasync = buffered + fdatasync, "
                        "auto (default) = direct where the file system supports it")
    return p


def open_checkpointer(args: argparse.Namespace, dist: Optional[Distributed] = None) -> Optional[CheckpointerLike]:
    directory = Path(args.checkpoint_dir)
    if args.checkpointer == "none":
        return None
    if dist is not None:  # one file per rank, one global commit (pccheck.sharded)
        if args.checkpointer != "pccheck":
            raise UserError(f"--checkpointer {args.checkpointer} does not support {dist.world_size} ranks: use pccheck (or none)")
        from .sharded import ShardedCheckpointer

        return ShardedCheckpointer(
            directory, dist.comm, max_async=args.max_async, keep=args.keep, threads=args.writer_threads,
            chunk_size=args.chunk_size, memory_budget=args.memory_budget, durability=args.durability,
        )
    if args.checkpointer == "torchsave":
        from .torchsave import TorchSaveCheckpointer

        return TorchSaveCheckpointer(directory, keep=args.keep)
    from .checkpointer import Checkpointer

    return Checkpointer(
        directory,
        max_async=args.max_async,
        keep=args.keep,
        threads=args.writer_threads,
        chunk_size=args.chunk_size,
        memory_budget=args.memory_budget,
        durability=args.durability,
    )


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda given but no CUDA device is available")
    return torch.device(name)


def _deterministic(seed: int, threads: Optional[int]) -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if threads:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)


class _Trainer:
    """Owns the live objects of one run and the step loop."""

    def __init__(self, args: argparse.Namespace, dist: Optional[Distributed] = None) -> None:
        self.args = args
        _deterministic(args.seed, args.threads)
        self.device = dist.device if dist is not None else _device(args.device)
        self.dtype = DTYPES[args.model_dtype]
        cfg = ModelConfig(
            vocab_size=VOCAB,
            sequence_length=args.sequence_length,
            d_model=args.d_model or args.sequence_length,
            n_layers=args.n_layers,
            n_heads=args.n_heads,
            dropout=args.dropout,
        )
        self.model = GPT(cfg).to(device=self.device, dtype=self.dtype)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay
        )
        warmup = args.warmup_steps if args.warmup_steps is not None else max(1, args.training_steps // 10)
        self.scheduler = warmup_cosine(self.optimizer, warmup, args.training_steps)
        rank, world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
        self.data = TokenSource(args.seed, args.sequence_length, args.batch_size, args.dataset, rank=rank, world=world)
        self.forward: torch.nn.Module = self.model
        if dist is not None:  # gradients averaged over ranks; the state stays self.model's (no "module." prefix)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    def state(self, step: int) -> dict[str, Any]:
        return trainstate.capture(step, self.model, self.optimizer, self.scheduler, self.data, self.dtype)

    def restore(self, state: dict[str, Any]) -> int:
        return trainstate.restore(state, self.model, self.optimizer, self.scheduler, self.data, self.dtype)

    def step(self, ckpt: Optional[CheckpointerLike]) -> float:
        self.model.train()
        x, y = (t.to(self.device, non_blocking=True) for t in self.data.next_batch())
        loss = self.forward(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        if ckpt is not None:
            ckpt.before_update()
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.item())


class _CheckpointClock:
    """Measures save-to-durable time of the checkpoints in flight (used for deadline decisions)."""

    def __init__(self) -> None:
        self.pending: list[tuple[SaveHandle, float]] = []
        self.last_seconds = 0.0
        self.last_durable_step: Optional[int] = None

    def started(self, handle: SaveHandle, t0: float) -> None:
        self.pending.append((handle, t0))

    def poll(self) -> list[int]:
        """Steps that became durable since the last poll."""
        became = []
        for handle, t0 in list(self.pending):
            if handle.done():
                self.pending.remove((handle, t0))
                self.last_seconds = time.monotonic() - t0
                became.append(handle.step)
                self.last_durable_step = max(handle.step, self.last_durable_step or 0)
        return became


def run(argv: Sequence[str], stop: Optional[StopPolicy] = None) -> RunResult:
    """Trains as `pccheck-train argv` would; raises UserError for user errors."""
    args = build_parser().parse_args(list(argv))
    ckpt_dir = Path(args.checkpoint_dir)
    if args.load_checkpoint and args.checkpointer != "none" and not ckpt_dir.is_dir():
        raise UserError(f"checkpoint directory {ckpt_dir} does not exist; nothing to resume (drop --load-checkpoint to start fresh)")
    env = distributed.detect()
    if env is None:
        trainer = _Trainer(args)
        ckpt = open_checkpointer(args)
        try:
            return _train(args, trainer, ckpt, stop)
        finally:
            if ckpt is not None:
                ckpt.close()
    if args.checkpointer == "torchsave":
        raise UserError(f"--checkpointer torchsave does not support {env.world_size} ranks: use pccheck (or none)")
    dist = distributed.setup(env, args.device)
    try:
        trainer = _Trainer(args, dist)
        ckpt = open_checkpointer(args, dist)
        try:
            return _train(args, trainer, ckpt, stop, dist)
        finally:
            if ckpt is not None:
                ckpt.close()
    finally:
        dist.close()


def _train(
    args: argparse.Namespace,
    trainer: _Trainer,
    ckpt: Optional[CheckpointerLike],
    stop: Optional[StopPolicy],
    dist: Optional[Distributed] = None,
) -> RunResult:
    log = logging.getLogger("pccheck.train")
    resumed_from: Optional[int] = None
    lead = dist is None or dist.rank == 0  # writes the loss and status files and the progress lines
    if ckpt is not None and args.load_checkpoint:
        loaded = ckpt.load_latest() if dist is not None or not _has_rank_sets(args) else _load_any(args)
        if loaded is None:
            log.warning("no valid checkpoint in %s: starting from step 0", args.checkpoint_dir)
        else:
            resumed_from = trainer.restore(loaded.state)
    start = resumed_from or 0
    if ckpt is not None and stop is None:
        stop = default_policy()
    losses = LossFile(Path(args.loss_file), resumed_from) if args.loss_file and lead else None
    status = StatusFile(Path(args.status_file) if args.status_file and lead else None)
    progress = TrainProgress(args.training_steps, start) if lead else _QuietProgress()
    if resumed_from is not None:
        progress.note(f"resumed from the checkpoint at step {resumed_from}")
    clock = _CheckpointClock()
    step_seconds = 0.0
    last_saved: Optional[int] = None
    step = start

    def save(at: int) -> None:
        nonlocal last_saved
        if losses is not None:
            losses.sync()
        progress.checkpoint = f"saving@{at}"
        t0 = time.monotonic()
        clock.started(ckpt.save(at, trainer.state(at)), t0)  # type: ignore[union-attr]
        last_saved = at

    def committed() -> Optional[int]:
        if dist is not None:  # the global step: every rank has committed it
            return ckpt.last_committed_step() if ckpt is not None else None
        return clock.last_durable_step if clock.last_durable_step is not None else resumed_from

    def report(state: str, reason: str = "", force: bool = False) -> None:
        for durable in clock.poll():
            progress.checkpoint = f"durable@{durable} ({clock.last_seconds:.2f}s)"
        status.update(
            force=force,
            step=step,
            training_steps=args.training_steps,
            last_committed_step=committed(),
            state=state,
            stop_reason=reason,
            step_seconds=step_seconds,
            checkpoint_seconds=clock.last_seconds,
        )

    try:
        report("running", force=True)
        while step < args.training_steps:
            t0 = time.monotonic()
            loss = trainer.step(ckpt)
            step += 1
            if ckpt is not None and step == start + 1:
                # After one step the state is complete (AdamW creates its moments lazily): reserve the
                # checkpoint storage now, so a disk too small fails here and not at the first checkpoint.
                ckpt.prepare(trainer.state(step))
            dt = time.monotonic() - t0
            step_seconds = dt if step_seconds == 0 else 0.8 * step_seconds + 0.2 * dt
            if dist is not None:  # one decision for all ranks, the mean loss, the global commit
                from .sharded import sync_step

                local = stop.check(step_seconds, clock.last_seconds) if stop is not None else None
                loss, agreed = sync_step(dist.comm, loss, local, ckpt)  # type: ignore[arg-type]
            if losses is not None:
                losses.append(step, loss)
            if ckpt is not None and step % args.checkpoint_freq == 0:
                save(step)
            progress.step(step, loss)
            report("running")
            if args.fail_at_step == step:
                report("killed", force=True)
                os.kill(os.getpid(), signal.SIGKILL)
            if dist is not None:
                reason = agreed
            else:
                reason = stop.check(step_seconds, clock.last_seconds) if stop is not None else None
            if reason is not None and step < args.training_steps:
                if last_saved != step:
                    save(step)
                ckpt.wait()  # type: ignore[union-attr]
                report("stopped", reason, force=True)
                progress.note(f"stopped after step {step} ({reason}); checkpoint at step {step} is durable")
                return RunResult("stopped", step, reason, _final(dist, ckpt, clock), resumed_from)
        if ckpt is not None:
            ckpt.wait()
        report("completed", force=True)
        return RunResult("completed", step, "", _final(dist, ckpt, clock), resumed_from)
    finally:
        progress.close()
        if losses is not None:
            losses.close()


def _final(dist: Optional[Distributed], ckpt: Optional[CheckpointerLike], clock: _CheckpointClock) -> Optional[int]:
    if dist is not None:
        return ckpt.last_committed_step() if ckpt is not None else None
    return clock.last_durable_step


class _QuietProgress:
    """Progress of ranks other than 0: their lines would repeat rank 0's."""

    checkpoint = "-"

    def note(self, message: str) -> None:
        pass

    def step(self, step: int, loss: float) -> None:
        pass

    def close(self) -> None:
        pass


def _has_rank_sets(args: argparse.Namespace) -> bool:
    """A single process resuming in a directory that holds multi-rank checkpoint files."""
    if args.checkpointer != "pccheck":
        return False
    from .sharded import list_files

    return any(world > 1 for world, _, _ in list_files(args.checkpoint_dir))


def _load_any(args: argparse.Namespace) -> Optional[Any]:
    """The newest checkpoint over pccheck.ckpt and every multi-rank file set (N ranks -> 1)."""
    from .distributed import Comm
    from .sharded import recover

    return recover(args.checkpoint_dir, Comm.single())


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[pccheck] %(message)s")
    try:
        result = run(sys.argv[1:] if argv is None else argv)
    except CheckpointError as exc:
        print(f"pccheck-train: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except UserError as exc:
        print(f"pccheck-train: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    finally:
        ignore_stop_signals()  # the exit code is decided: a late USR2/TERM must not turn it into a kill
    return EXIT_OK if result.status == "completed" else EXIT_REQUEUE


if __name__ == "__main__":
    sys.exit(main())
