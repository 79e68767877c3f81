"""What a checkpoint directory holds, from headers only: the newest committed step a resume would start
from. pccheck-submit's job wrapper judges progress by it, whatever wrote the checkpoints: a pccheck file
(`pccheck.ckpt`), a multi-rank file set, or torch.save baseline files (`ckpt-<step>.pt`).
"""
from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Optional, Union

from .errors import CheckpointError

log = logging.getLogger("pccheck.catalog")


def newest_committed_step(directory: Union[str, Path]) -> Optional[int]:
    """The newest step committed in `directory` by any of pccheck's writers (None when there is none).

    Reads superblocks, commit rings and chunk tables (pccheck) or zip directories (torch.save files);
    payload checksums are verified by a load, not here.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    steps = [s for s in (_pccheck_step(directory), _torchsave_step(directory)) if s is not None]
    return max(steps) if steps else None


def _pccheck_step(directory: Path) -> Optional[int]:
    from .sharded import analyze, list_files, scan_summary

    files = list_files(directory)
    if not files:
        return None
    try:
        sets = analyze(files, {n: scan_summary(directory / n) for _, _, n in files})
    except (OSError, CheckpointError) as exc:
        log.warning("cannot read the checkpoints in %s: %s", directory, exc)
        return None
    steps = [s["global_step"] for s in sets if s["global_step"] is not None]
    return max(steps) if steps else None


def _torchsave_step(directory: Path) -> Optional[int]:
    from .torchsave import checkpoints

    for step, path in checkpoints(directory):
        try:
            with zipfile.ZipFile(path):  # renamed into place complete; a torn file has no central directory
                return step
        except (zipfile.BadZipFile, OSError):
            continue
    return None
