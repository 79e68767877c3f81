"""Checks of the command a job is to run, made before anything is submitted."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional, Sequence


def command_problem(command: Sequence[str], cwd: Path) -> Optional[str]:
    """Why CMD cannot run, checked before anything is submitted (None when it looks runnable)."""
    exe = command[0]
    if "/" in exe:
        path = cwd / exe
        if not path.is_file():
            return f"command not found: {exe}"
        if not os.access(path, os.X_OK):
            return f"command is not executable: {exe}"
    elif shutil.which(exe) is None:
        return f"command not found on PATH: {exe}"
    if Path(exe).name.startswith("python"):  # python [options] script.py: the script must exist
        args = [a for a in command[1:] if a not in ("-u", "-O", "-B", "-E", "-s", "-I")]
        if args and not args[0].startswith("-") and not (cwd / args[0]).is_file():
            return f"script not found: {args[0]} (in {cwd})"
    return None
