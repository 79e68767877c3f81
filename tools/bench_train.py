"""pccheck-bench, training side: the overhead of checkpointing on the real trainer's throughput.

One child process (`python -m pccheck.tools.bench_train SPEC.json`, apart from the benchmark's gigabyte
state) holds one trainer per model (pccheck.demo's GPT and AdamW: the default model, and the
`--sequence-length 1024` model at batch size 1) and one checkpointer per kind. A block is one untimed
step, then `block` timed steps, then an untimed wait until every checkpoint is durable; a configuration
checkpoints after its untimed step and after every `freq`-th timed step, so the timed steps carry exactly
the copy and write of one checkpoint per `freq` steps (the untimed step's runs beside the first timed
step; the last one's drains after the window). Every round runs one block of every configuration of a
model and block length (a configuration with a `share` in one round of `share`, so every row's rounds
span the whole run), in a seeded random order, on the same trainer: only the checkpointing differs
between the blocks compared. The overhead of a round is its block's time over the
no-checkpoint block's of the same round, minus 1; the figure is the median over rounds, with the spread.

A block's time is its wall time. pccheck-bench runs at a raised priority in a session of its own
(tools/bench_isolation.py), where the training thread barely waits for a CPU without checkpointing (0.04-0.3 %
of a block here, other sessions busy); what it waits with a checkpointer is that checkpointer's doing (its
threads, the kernel's writeback: 0.6-1.4 % for pccheck every step, 12-19 % for torch.save) and stays in. The wait (/proc/thread-self/schedstat) is in the JSON for each block, to tell the two apart.
"""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from .bench_io import spread

MODELS = {"default": [], "seq1024": ["--sequence-length", "1024", "--batch-size", "1"]}


@dataclass(frozen=True)
class Config:
    model: str  # a key of MODELS
    kind: str  # "none", "pccheck" or "torchsave"
    freq: int  # checkpoint every freq steps (0: never)
    block: int  # timed steps per block
    share: int = 1  # runs in one round of every `share` (long blocks: their own noise is averaged over more steps)

    @property
    def key(self) -> str:
        """The JSON key of its overhead, e.g. overhead_every_10, baseline_overhead_every_1, overhead_every_1_seq1024."""
        prefix = "baseline_" if self.kind == "torchsave" else ""
        return f"{prefix}overhead_every_{self.freq}" + ("" if self.model == "default" else f"_{self.model}")


SHORT_BLOCK = 10  # timed steps per block of the default model's every-step and every-10 rows
LONG_SHARE = 8  # the 50-step blocks (no target) run in one round of eight
SEQ1024_SHARE = 4  # the sequence-length-1024 model's 2-step blocks (1.9 s a step here) in one of four
CONFIGS = [
    *(Config("default", kind, freq, SHORT_BLOCK) for kind, freq in
      [("none", 0), ("pccheck", 1), ("torchsave", 1), ("pccheck", 10), ("torchsave", 10)]),
    *(Config("default", kind, freq, 50, LONG_SHARE) for kind, freq in [("none", 0), ("pccheck", 50), ("torchsave", 50)]),
    *(Config("seq1024", kind, freq, 2, SEQ1024_SHARE) for kind, freq in [("none", 0), ("pccheck", 1)]),
]


def every_step_configs() -> list[Config]:
    """A checkpoint every step and none, on each model: the every-step rows alone (tests/gpu/check.py)."""
    every = {(c.model, c.block) for c in CONFIGS if c.kind == "pccheck" and c.freq == 1}
    return [c for c in CONFIGS if (c.model, c.block) in every and (c.kind == "none" or (c.kind == "pccheck" and c.freq == 1))]


def rounds_for(share: int, rounds: int) -> int:
    """Rounds a configuration runs in: every `share`-th of `rounds`, spread over the whole run."""
    return -(-rounds // share)


def _runqueue_wait_s() -> float:
    """Seconds this thread has waited for a CPU while runnable (0 where the kernel does not say)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class _Model:
    """One trainer and its checkpointers; steps continue from block to block."""

    def __init__(self, name: str, workdir: Path, trainer_flags: list[str], pccheck_flags: list[str], kinds: set[str]) -> None:
        from pccheck.demo.flags import build_parser
        from pccheck.demo.train import _Trainer, open_checkpointer

        base = [*MODELS[name], *trainer_flags]
        self.trainer = _Trainer(build_parser().parse_args([*base, "--checkpointer", "none"]))
        self.checkpointers: dict[str, Any] = {}
        for kind in sorted(kinds - {"none"}):
            d = workdir / f"{name}-{kind}"
            shutil.rmtree(d, ignore_errors=True)
            flags = [*base, "--checkpointer", kind, "--checkpoint-dir", str(d), *(pccheck_flags if kind == "pccheck" else [])]
            self.checkpointers[kind] = open_checkpointer(build_parser().parse_args(flags))
        self.step = 0
        self.advance(None, False)
        for ck in self.checkpointers.values():
            ck.prepare(self.trainer.state(self.step))

    def advance(self, ckpt: Any, save: bool) -> None:
        """One training step as pccheck-train runs it, then a checkpoint when `save`."""
        self.trainer.step(ckpt)
        self.step += 1
        if save:
            ckpt.save(self.step, self.trainer.state(self.step))

    def block(self, cfg: Config) -> dict[str, Any]:
        ck = self.checkpointers.get(cfg.kind)
        counts = dict(getattr(ck, "counts", {}))
        self.advance(ck, cfg.freq > 0)
        w0, t0 = _runqueue_wait_s(), time.perf_counter()
        for i in range(1, cfg.block + 1):
            self.advance(ck, cfg.freq > 0 and i % cfg.freq == 0)
        wall = time.perf_counter() - t0
        waited = _runqueue_wait_s() - w0
        if ck is not None:
            ck.wait()
        after = getattr(ck, "counts", {})
        return {**asdict(cfg), "seconds": wall, "cpu_wait_seconds": waited,
                **{k: after[k] - counts.get(k, 0) for k in after}}

    def close(self) -> None:
        for ck in self.checkpointers.values():
            ck.close()


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    logging.disable(logging.WARNING)
    workdir = Path(spec["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    configs = [Config(**c) for c in spec["configs"]]
    rounds = spec["rounds"]
    groups: dict[tuple[str, int, int], list[Config]] = {}
    for c in configs:
        groups.setdefault((c.model, c.block, c.share), []).append(c)
    models = {name: _Model(name, workdir, spec["trainer_flags"], spec["pccheck_flags"],
                           {c.kind for c in configs if c.model == name})
              for name in dict.fromkeys(c.model for c in configs)}
    for (name, _, _), group in groups.items():  # warm-up: allocator, first touch, the checkpoint files' first writes
        for c in group:
            models[name].block(c)
    # Every model's rounds spread over the whole run (a load that comes and goes hits every row alike), the
    # blocks of a round in a seeded random order (no configuration always follows the same one).
    blocks: list[dict[str, Any]] = []
    for r in range(rounds):
        for (name, _, share), group in groups.items():
            if r % share == 0:
                for c in random.Random(r).sample(group, len(group)):
                    blocks.append({**models[name].block(c), "round": r})
        _progress(f"  training: round {r + 1}/{rounds}")
    for model in models.values():
        model.close()
    shutil.rmtree(workdir, ignore_errors=True)
    return summarize(blocks)


def summarize(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """Per configuration: the overhead of every round against that round's no-checkpoint block; the median,
    the spread (quartiles, extremes), the share of the time the training thread waited for a CPU (beside
    the no-checkpoint blocks' share) and, for pccheck, the checkpoints done, waited for and skipped."""
    def same(b: dict[str, Any], c: Config) -> bool:
        return b["model"] == c.model and b["block"] == c.block

    out: dict[str, Any] = {"blocks": blocks, "overheads": {}}
    seen = list(dict.fromkeys(Config(b["model"], b["kind"], b["freq"], b["block"], b["share"]) for b in blocks))
    for c in seen:
        if c.kind == "none":
            continue
        base = {b["round"]: b for b in blocks if same(b, c) and b["kind"] == "none"}
        mine = [b for b in blocks if same(b, c) and b["kind"] == c.kind and b["freq"] == c.freq and b["round"] in base]
        row: dict[str, Any] = {**spread([b["seconds"] / base[b["round"]]["seconds"] - 1.0 for b in mine]),
                               "cpu_wait_share": statistics.median(b["cpu_wait_seconds"] / b["seconds"] for b in mine),
                               "cpu_wait_share_none": statistics.median(b["cpu_wait_seconds"] / b["seconds"]
                                                                         for b in base.values())}
        if c.kind == "pccheck":
            saved, skipped = (sum(b.get(k, 0) for b in mine) for k in ("saved", "skipped"))
            row.update(saved=saved, skipped=skipped, waited=sum(b.get("waited", 0) for b in mine),
                       effective_every=c.freq * (saved + skipped) / saved if saved else None)
        out["overheads"][c.key] = row
        out[c.key] = row["median"]
    none = [b["seconds"] for b in blocks if b["kind"] == "none" and b["model"] == "default" and b["block"] == SHORT_BLOCK]
    if none:
        out["steps_per_s_none"] = SHORT_BLOCK / statistics.median(none)
    return out


def _progress(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def measure(rounds: int, workdir: Path, pccheck_flags: list[str], trainer_flags: list[str],
            configs: Optional[list[Config]] = None, timeout: float = 3600) -> dict[str, Any]:
    """Runs the worker in a child process and returns its summary."""
    with tempfile.TemporaryDirectory(prefix="pccheck-bench-train-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        out_path = Path(tmp) / "out.json"
        spec = {"rounds": rounds, "workdir": str(workdir), "pccheck_flags": pccheck_flags,
                "trainer_flags": list(trainer_flags), "out": str(out_path),
                "configs": [asdict(c) for c in (configs or CONFIGS)]}
        spec_path.write_text(json.dumps(spec))
        proc = subprocess.run([sys.executable, "-m", "pccheck.tools.bench_train", str(spec_path)],
                              stdout=subprocess.DEVNULL, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if proc.returncode != 0:
            raise RuntimeError(f"training benchmark failed (exit {proc.returncode}); its error is above")
        return json.loads(out_path.read_text())


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    result = worker(spec)
    Path(spec["out"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
