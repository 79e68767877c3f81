"""pccheck-train's flags, apart from the trainer so pccheck-submit can check them without loading torch."""
from __future__ import annotations

import argparse

from pccheck import contract
from pccheck.cli import OneLineParser, int_at_least
from pccheck.interval import DEFAULT_MTBF_NODE_HOURS
from pccheck.sizes import parse_size

DTYPES = {"fp32": "float32", "bf16": "bfloat16"}  #: --model-dtype: the torch dtype of each name
DESCRIPTION = """pccheck-train: trains a GPT-style language model with pluggable checkpointing and bit-exact resume.

Exit status: 0 all steps done; 75 stopped at a step boundary after a durable checkpoint (requeue me);
2 a user error (one line on stderr); 1 any other failure.
"""

_positive = int_at_least(1)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value:g} must be positive")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="pccheck-train", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    t.add_argument("--status-file", default=None,
                   help=f"JSON progress file for followers (default: ${contract.STATUS_FILE}, set by pccheck-submit)")
    m = p.add_argument_group("model")
    m.add_argument("--model-dtype", choices=sorted(DTYPES), default="fp32")
    m.add_argument("--sequence-length", type=_positive, default=128)
    m.add_argument("--d-model", type=_positive, default=None, help="model dimension (default: the sequence length)")
    m.add_argument("--n-layers", type=_positive, default=2)
    m.add_argument("--n-heads", type=_positive, default=4)
    m.add_argument("--dropout", type=float, default=0.1)
    m.add_argument("--fsdp", action="store_true",
                   help="with several ranks: shard parameters and optimizer state (FSDP2 fully_shard) instead of DDP")
    c = p.add_argument_group("checkpointing")
    c.add_argument("--checkpointer", choices=["none", "torchsave", "pccheck"], default="pccheck")
    c.add_argument("--checkpoint-dir", default=contract.checkpoint_dir("checkpoints"),
                   help=f"default: ${contract.CHECKPOINT_DIR} (set by pccheck-submit), else checkpoints")
    c.add_argument("--checkpoint-freq", type=int_at_least(1, "auto"), default=50,
                   help="checkpoint every N steps, or auto: the interval with the least expected loss plus overhead, "
                        "from measured checkpoint times and --mtbf-node-hours (pccheck.interval)")
    c.add_argument("--mtbf-node-hours", type=_positive_float, default=DEFAULT_MTBF_NODE_HOURS,
                   help="with --checkpoint-freq auto: mean time between failures of one node, in hours "
                        "(divided by SLURM_JOB_NUM_NODES; default %(default)g)")
    c.add_argument("--when-busy", choices=["wait", "skip"], default="wait",
                   help="pccheck: a checkpoint due while --max-async are in flight waits for a slot (default) or is skipped")
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
