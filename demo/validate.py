"""pccheck-validate: the reference report's experiment, as one command.

Two uninterrupted runs and one that is SIGKILLed after step --fail-at and resumed with --load-checkpoint;
the three loss traces must be identical, float for float. Draws them in one PNG. Exit 0 when identical,
1 when they differ, 2 on a usage error. Trainer flags after `--` are passed to every run.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from rich.console import Console

console = Console(stderr=True)


def _run(flags: list[str], cwd: Path) -> int:
    return subprocess.run([sys.executable, "-m", "pccheck.demo", *flags], cwd=cwd, stderr=subprocess.DEVNULL).returncode


def _read(path: Path) -> list[tuple[int, float]]:
    rows = path.read_text().splitlines()[1:]
    return [(int(s), float(v)) for s, v in (r.split(",") for r in rows)]


def _plot(traces: dict[str, list[tuple[int, float]]], fail_at: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    styles = {"run 1": dict(lw=3, alpha=0.5), "run 2": dict(lw=1.5), "killed + resumed": dict(lw=1, ls="--")}
    for label, rows in traces.items():
        ax.plot([s for s, _ in rows], [v for _, v in rows], label=label, **styles.get(label, {}))
    ax.axvline(fail_at, color="red", lw=0.8, ls=":", label=f"SIGKILL after step {fail_at}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend()
    ax.set_title("Loss traces: uninterrupted vs killed and resumed")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="pccheck-validate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpointer", choices=["pccheck", "torchsave"], default="pccheck")
    p.add_argument("--steps", type=int, default=151)
    p.add_argument("--freq", type=int, default=50)
    p.add_argument("--fail-at", type=int, default=75, help="SIGKILL right after this step (default 75)")
    p.add_argument("--out", type=Path, default=Path("validate-out"), help="work directory; the PNG goes here")
    args = p.parse_args(own)
    if not 0 < args.fail_at < args.steps:
        p.error("--fail-at must lie between 0 and --steps")
    args.out.mkdir(parents=True, exist_ok=True)
    common = ["--training-steps", str(args.steps), "--checkpoint-freq", str(args.freq), "--checkpointer", args.checkpointer, *extra]
    files = {}
    for name in ("run 1", "run 2", "killed + resumed"):
        d = args.out / name.replace(" ", "-").replace("+", "and")
        d.mkdir(exist_ok=True)
        flags = [*common, "--checkpoint-dir", str((d / "ckpt").resolve()), "--loss-file", str((d / "loss.csv").resolve())]
        for stale in (d / "ckpt").glob("*"):
            stale.unlink()
        if name == "killed + resumed":
            rc = _run([*flags, "--fail-at-step", str(args.fail_at)], d)
            console.print(f"killed run exited with {rc} after step {args.fail_at}; resuming")
            rc = _run([*flags, "--load-checkpoint"], d)
        else:
            rc = _run(flags, d)
        if rc != 0:
            console.print(f"[red]{name}: the trainer exited with {rc}[/red]")
            return 1
        files[name] = d / "loss.csv"
    blobs = {name: path.read_bytes() for name, path in files.items()}
    png = args.out / "loss-traces.png"
    _plot({name: _read(path) for name, path in files.items()}, args.fail_at, png)
    same = len(set(blobs.values())) == 1
    verdict = "[green]identical[/green]" if same else "[red]DIFFERENT[/red]"
    console.print(f"{args.checkpointer}: {args.steps} steps, the three loss traces are {verdict}; chart: {png}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
