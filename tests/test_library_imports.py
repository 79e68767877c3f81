"""The library needs torch and numpy only: in a fresh venv that holds exactly torch, numpy and what they
depend on (no submitit, rich or matplotlib), `import pccheck` and its public surface work end to end."""
from __future__ import annotations

import os
import re
import subprocess
import venv
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import importlib.util, sys
for name in ("submitit", "rich", "matplotlib"):
    assert importlib.util.find_spec(name) is None, f"{name} is importable in this venv"
import pccheck
from pccheck import Checkpointer, load, StopRequest, rng_state, set_rng_state, checkpoint_dir, CheckpointError
import torch
state = {"w": torch.arange(6.0), "rng": rng_state(), "note": "x"}
with Checkpointer(sys.argv[1]) as ck:
    stop = StopRequest(ck, total_steps=1)
    ck.save(1, state)
    assert stop.check(1) is None
    stop.completed(1)
back = load(sys.argv[1])
assert torch.equal(back["w"], state["w"]) and back["note"] == "x"
set_rng_state(back["rng"])
assert not any(m.split(".")[0] in ("submitit", "rich", "matplotlib") for m in sys.modules)
print("library ok")
"""


def _closure(names: list[str]) -> set[str]:
    """The installed distributions `names` need, recursively (their declared, non-extra requirements)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = re.split(r"[ ;<>=!~\[(]", todo.pop())[0].lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        todo += [r for r in dist.requires or [] if "extra ==" not in r]
    return seen


def _top_level(dist_name: str) -> set[str]:
    dist = metadata.distribution(dist_name)
    tops = set()
    for f in dist.files or []:
        first = f.parts[0]
        if first != "..":
            tops.add(first)
    return tops


def test_import_pccheck_without_launcher_and_tool_dependencies(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    site = next(env_dir.glob("lib/python*/site-packages"))
    ours = Path(metadata.distribution("torch").locate_file(""))
    for dist_name in _closure(["torch", "numpy"]):
        for top in _top_level(dist_name):
            src = ours / top
            if src.exists() and not (site / top).exists():
                (site / top).symlink_to(src)
    (site / "pccheck-source.pth").write_text(str(ROOT) + "\n")  # the library as it is in the tree (its _core too)
    python = env_dir / "bin" / "python"
    out = subprocess.run([str(python), "-c", SCRIPT, str(tmp_path / "ck")], capture_output=True, text=True,
                         timeout=300, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "library ok" in out.stdout
