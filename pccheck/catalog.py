"""What a checkpoint directory holds, from headers only: the newest committed step a resume would start
from. pccheck-submit's job wrapper judges progress by it, whatever wrote the checkpoints: a pccheck file
(`pccheck.ckpt`), a DCP file set (pccheck.dcp), or torch.save baseline files (`ckpt-<step>.pt`).
"""
from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Optional, Union

log = logging.getLogger("pccheck.catalog")


def newest_committed_step(directory: Union[str, Path]) -> Optional[int]:
    """The step a resume would start from in `directory` (None when there is none).

    pccheck files and DCP sets: the checkpoint pccheck.dcp.sets.newest picks (the rule every loader uses:
    records, chunk tables and global commits verify, every rank part is named by its CRC); payload chunks
    are verified by a load, not here. Otherwise the newest complete torch.save file.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    from .dcp.sets import newest, scan_directory

    found = newest(scan_directory(directory))
    if found is not None:
        return found[1].step
    return _torchsave_step(directory)


def _torchsave_step(directory: Path) -> Optional[int]:
    from .torchsave import checkpoints

    for step, path in checkpoints(directory):
        try:
            with zipfile.ZipFile(path):  # renamed into place complete; a torn file has no central directory
                return step
        except (zipfile.BadZipFile, OSError):
            continue
    return None
