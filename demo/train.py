"""pccheck-train: the demo trainer (flags and exit status: demo/flags.py). A client of the library like any user
script: pccheck.Checkpointer (or the torch.save baseline) for the state of one process, pccheck.dcp (DCP with
pccheck storage) for several ranks (DDP, or FSDP2 with --fsdp), pccheck.StopRequest for the stop protocol
of docs/jobs.md."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

# Set before torch loads MKL: with dynamic threading MKL may use fewer threads than asked when the machine
# is busy, which changes the summation order and so the loss trace (seen once under load with 2 threads).
os.environ.setdefault("MKL_DYNAMIC", "FALSE")
os.environ.setdefault("OMP_DYNAMIC", "FALSE")

import torch  # noqa: E402

from pccheck import contract, distributed
from pccheck.checkpointing import CheckpointerLike, Loaded
from pccheck.distributed import Comm, Distributed
from pccheck.interval import Interval, from_flag
from pccheck.errors import CheckpointError, UserError
from pccheck.loop import _FROM_ENV, StopRequest
from pccheck.stopping import ignore_stop_signals

from . import flags, trainstate
from .data import VOCAB, TokenSource
from .lossfile import LossFile
from .model import GPT, ModelConfig
from .progress import TrainProgress
from .schedule import warmup_cosine

log = logging.getLogger("pccheck.train")
DTYPES = {name: getattr(torch, attr) for name, attr in flags.DTYPES.items()}


@dataclass
class RunResult:
    status: str  # "completed" | "stopped"
    step: int
    reason: str
    last_committed_step: Optional[int]
    resumed_from: Optional[int]


def open_checkpointer(args: argparse.Namespace, dist: Optional[Distributed] = None) -> Optional[CheckpointerLike]:
    directory = Path(args.checkpoint_dir)
    if args.checkpointer == "none":
        return None
    if dist is not None:  # DCP: each rank writes its items into its own file, one global commit (pccheck.dcp)
        if args.checkpointer != "pccheck":
            raise UserError(f"--checkpointer {args.checkpointer} does not support {dist.world_size} ranks: use pccheck (or none)")
        import pccheck.dcp

        return pccheck.dcp.Checkpointer(
            directory, keep=args.keep, threads=args.writer_threads, chunk_size=args.chunk_size,
            memory_budget=args.memory_budget, durability=args.durability,
            local_keys=("rng",),  # the RNG states differ between ranks on GPUs; DCP would keep one rank's copy
        )
    if args.checkpointer == "torchsave":
        from pccheck.torchsave import TorchSaveCheckpointer

        return TorchSaveCheckpointer(directory, keep=args.keep)
    from pccheck.checkpointer import Checkpointer

    return Checkpointer(
        directory,
        max_async=args.max_async,
        keep=args.keep,
        threads=args.writer_threads,
        chunk_size=args.chunk_size,
        memory_budget=args.memory_budget,
        durability=args.durability,
        block=args.when_busy == "wait",
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
        rank, world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
        self.data = TokenSource(args.seed, args.sequence_length, args.batch_size, args.dataset, rank=rank, world=world)
        self.forward: torch.nn.Module = self.model
        self.sharded = dist is not None  # the state goes through DCP, keyed by parameter name
        if dist is not None and args.fsdp:  # parameters, gradients and optimizer state sharded over the ranks
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh(self.device.type, (dist.world_size,))
            for block in self.model.blocks:
                fully_shard(block, mesh=mesh)
            fully_shard(self.model, mesh=mesh)
        elif dist is not None:  # gradients averaged over ranks; the state stays self.model's (no "module." prefix)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay
        )
        warmup = args.warmup_steps if args.warmup_steps is not None else max(1, args.training_steps // 10)
        self.scheduler = warmup_cosine(self.optimizer, warmup, args.training_steps)

    def state(self, step: int) -> dict[str, Any]:
        return self.dcp_state(step) if self.sharded else trainstate.capture(
            step, self.model, self.optimizer, self.scheduler, self.data, self.dtype)

    def dcp_state(self, step: int) -> dict[str, Any]:
        """The state as DCP saves and loads it (also the template a DCP load fills in place)."""
        return trainstate.capture_dcp(step, self.model, self.optimizer, self.scheduler, self.data, self.model, self.dtype)

    def restore(self, loaded: Loaded) -> int:
        if loaded.source.startswith("dcp:"):
            return trainstate.restore_dcp(loaded.state, self.model, self.optimizer, self.scheduler, self.data,
                                          self.model, self.dtype)
        return trainstate.restore(loaded.state, self.model, self.optimizer, self.scheduler, self.data, self.dtype)

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


def run(argv: Sequence[str], stop: Optional[StopRequest] = None) -> RunResult:
    """Trains as `pccheck-train argv` would; raises UserError for user errors."""
    args = flags.build_parser().parse_args(list(argv))
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
    stop: Optional[StopRequest],
    dist: Optional[Distributed] = None,
) -> RunResult:
    resumed_from: Optional[int] = None
    lead = dist is None or dist.rank == 0  # writes the loss file and the progress lines
    if ckpt is not None and args.load_checkpoint:
        loaded = _resume(args, trainer, ckpt)
        if loaded is None:
            log.warning("no valid checkpoint in %s: starting from step 0", args.checkpoint_dir)
        else:
            resumed_from = trainer.restore(loaded)
    start = resumed_from or 0
    if stop is None:
        stop = StopRequest(ckpt, total_steps=args.training_steps, status_file=args.status_file or _FROM_ENV)
    losses = LossFile(Path(args.loss_file), resumed_from) if args.loss_file and lead else None
    progress = TrainProgress(args.training_steps, start) if lead else _QuietProgress()
    if resumed_from is not None:
        progress.note(f"resumed from the checkpoint at step {resumed_from}")
    interval: Optional[Interval] = None
    if ckpt is not None:
        interval = from_flag(args.checkpoint_freq, ckpt, mtbf_node_hours=args.mtbf_node_hours,
                             comm=dist.comm if dist is not None else Comm.single())
    step = start
    try:
        while step < args.training_steps:
            loss = trainer.step(ckpt)
            step += 1
            if ckpt is not None and step == start + 1:
                # After one step the state is complete (AdamW creates its moments lazily): reserve the
                # checkpoint storage now, so a disk too small fails here and not at the first checkpoint.
                ckpt.prepare(trainer.state(step))
            if dist is not None:  # the mean loss of all ranks
                loss = dist.comm.allreduce_f64([loss], "sum")[0] / dist.world_size
            if losses is not None:
                losses.append(step, loss)
            if interval is not None and interval.due(step):
                _save(ckpt, step, trainer, losses)
            progress.checkpoint = _checkpoint_note(ckpt)
            progress.step(step, loss)
            if args.fail_at_step == step:
                os.kill(os.getpid(), signal.SIGKILL)
            reason = stop.check(step)
            if reason is not None and step < args.training_steps:
                if ckpt is not None and ckpt.last_saved_step != step:
                    _save(ckpt, step, trainer, losses)
                committed = stop.stopped(step)  # logs "stopped after step N (...); checkpoint at step S is durable"
                _summarize_checkpoints(ckpt, step - start, progress)
                return RunResult("stopped", step, reason, committed, resumed_from)
        stop.completed(step)
        _summarize_checkpoints(ckpt, step - start, progress)
        committed = ckpt.last_committed_step() if ckpt is not None else None
        return RunResult("completed", step, "", committed, resumed_from)
    finally:
        progress.close()
        if losses is not None:
            losses.close()


def _save(ckpt: CheckpointerLike, step: int, trainer: _Trainer, losses: Optional[LossFile]) -> None:
    if losses is not None:  # the loss rows never lag a committed step
        losses.sync()
    ckpt.save(step, trainer.state(step))


def _summarize_checkpoints(ckpt: Optional[CheckpointerLike], steps: int, progress: Any) -> None:
    """How many checkpoints were taken, and the effective frequency when the disk made some wait or be skipped."""
    counts = getattr(ckpt, "counts", None)
    if not counts or not counts["saved"] or not steps:
        return
    busy = "".join(f", {counts[k]} {k} for a free slot" if k == "waited" else f", {counts[k]} skipped (max_async in flight)"
                   for k in ("waited", "skipped") if counts[k])
    progress.note(f"checkpoints: {counts['saved']} saved in {steps} steps (effective frequency: one every "
                  f"{steps / counts['saved']:.2f} steps){busy}")


def _checkpoint_note(ckpt: Optional[CheckpointerLike]) -> str:
    if ckpt is None or ckpt.last_saved_step is None:
        return "-"
    seconds = ckpt.durable_seconds()
    committed = ckpt.last_committed_step()
    return f"durable@{committed} ({seconds:.2f}s)" if seconds is not None else f"saving@{ckpt.last_saved_step}"


class _QuietProgress:
    """Progress of ranks other than 0: their lines would repeat rank 0's."""

    checkpoint = "-"

    def note(self, message: str) -> None:
        pass

    def step(self, step: int, loss: float) -> None:
        pass

    def close(self) -> None:
        pass


def _resume(args: argparse.Namespace, trainer: _Trainer, ckpt: CheckpointerLike) -> Optional[Loaded]:
    """The newest valid checkpoint over every file set in the directory (the rule of pccheck.dcp.sets): a DCP
    set of any world size (N ranks -> this many, one process included) or a single-process pccheck.ckpt
    (1 -> N ranks under DDP). Its source starts with "dcp:" when it holds a DCP state."""
    if args.checkpointer != "pccheck":
        return ckpt.load_latest()
    import pccheck.dcp
    from pccheck.checkpointer import load_checkpoint
    from pccheck.dcp.sets import newest, scan_directory

    found = newest(scan_directory(args.checkpoint_dir))
    if found is None:
        return None
    fileset, _ = found
    if fileset.kind == "dcp":
        reader = ckpt if isinstance(ckpt, pccheck.dcp.Checkpointer) else pccheck.dcp.Checkpointer(
            args.checkpoint_dir, mode="sync", local_keys=("rng",))
        loaded = reader.load_latest(trainer.dcp_state(0))
        return None if loaded is None else Loaded(loaded.step, loaded.state, f"dcp:{loaded.source}")
    if args.fsdp:
        raise UserError(f"{fileset.files[0]} is a single-process checkpoint: resume it without --fsdp (DDP or one process)")
    return load_checkpoint(fileset.files[0])


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[pccheck] %(message)s")
    try:
        result = run(sys.argv[1:] if argv is None else argv)
    except CheckpointError as exc:
        print(f"pccheck-train: error: {exc}", file=sys.stderr)
        return contract.EXIT_FAILURE
    except UserError as exc:
        print(f"pccheck-train: error: {exc}", file=sys.stderr)
        return contract.EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    finally:
        ignore_stop_signals()  # the exit code is decided: a late USR2/TERM must not turn it into a kill
    return contract.EXIT_OK if result.status == "completed" else contract.EXIT_REQUEUE


if __name__ == "__main__":
    sys.exit(main())
