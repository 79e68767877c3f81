"""Rebuilds the crash image of a test's last power cut, offline, from the state the daemon kept before the cut
and the seed the test printed (docs/power-loss.md):

    python -m crashfs.replay .../crashfs/precut.pickle --seed 7 [--data torn] [--granularity 512] --out /tmp/image

The image is a plain directory tree; `python -m crashfs.daemon --image /tmp/image --mountpoint MNT` serves it.
"""
from __future__ import annotations

import argparse
import pickle
from pathlib import Path

from . import image
from .model import DATA_MODES, GRANULARITIES, Disk


def main() -> None:
    p = argparse.ArgumentParser(prog="crashfs.replay")
    p.add_argument("state", type=Path, help="precut.pickle, beside the test's mount point")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--data", choices=DATA_MODES, default="torn")
    p.add_argument("--granularity", type=int, choices=GRANULARITIES, default=None)
    p.add_argument("--out", type=Path, required=True, help="directory for the crash image (replaced)")
    args = p.parse_args()
    with open(args.state, "rb") as f:
        disk: Disk = pickle.load(f)  # written by the test's own daemon: trusted
    crashed, report = disk.crash_image(args.seed, args.data, args.granularity)
    image.save(crashed, args.out)
    print(f"{report}\ncrash image in {args.out}")


if __name__ == "__main__":
    main()
