"""The scratch copy the mutation check edits, with an environment that imports it and builds of its own.

- The tree: the repository's tracked and untracked-but-not-ignored files (git ls-files), so nothing the
  developer has not committed or staged is missed and no build output or venv comes along.
- Its environment: the project venv installs pccheck *editable*, and its import finder maps pccheck,
  pccheck.launcher, pccheck.demo and pccheck.tools to the original tree, so neither PYTHONPATH nor the project
  venv can import the copy. The copy gets a virtual environment of its own: the same interpreter, the
  project venv's site-packages as plain path entries (torch, numpy, pytest... without running that venv's
  .pth files, so its finder never loads), and an editable install of the copy (pip, no dependencies, no
  index), which maps the names to the copy and gives it its own console scripts. Tests that start
  `sys.executable` or `pccheck-*` get the copy too. The install is checked: every package must import
  from the copy.
- Builds: the C++ tests build with CMake in a directory of their own (incremental: an edit of one file
  recompiles that file). The extension module is rebuilt in place only for a core mutation that names
  pytest tests, with an object directory of its own that is kept between mutations (each object is
  recompiled only when its source is newer; a header edit touches every source).
"""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import venv
from pathlib import Path

_PACKAGES = ("pccheck", "pccheck.launcher", "pccheck.demo", "pccheck.tools", "pccheck._core")
_BUILD_EXT = (
    "import sys\n"
    "from pybind11.setup_helpers import ParallelCompile, naive_recompile\n"
    "ParallelCompile(default={jobs}, needs_recompile=naive_recompile).install()\n"
    "sys.argv[0] = 'setup.py'\n"
    "exec(compile(open('setup.py').read(), 'setup.py', 'exec'))\n"
)


class ScratchError(Exception):
    """The scratch copy could not be made or built (not a verdict on any mutation)."""


class Scratch:
    def __init__(self, source: Path, work: Path) -> None:
        self.source = source
        self.work = work
        self.tree = work / "tree"
        self.venv = work / "venv"
        self.cpp_build = work / "cpp-build"
        self.ext_build = work / "ext-build"
        self.tmp = work / "tmp"
        self.jobs = str(os.cpu_count() or 2)
        self._cpp_configured = False

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of every command run in the copy: its venv first on PATH, no PYTHONPATH."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["VIRTUAL_ENV"] = str(self.venv)
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        env.update(extra or {})
        return env

    # -- making it ---------------------------------------------------------------------------------------
    def create(self) -> None:
        if self.work.exists():
            shutil.rmtree(self.work)
        self.tmp.mkdir(parents=True)
        self._copy_tree()
        self._make_venv()
        self._install()

    def _copy_tree(self) -> None:
        out = self._run(["git", "-C", str(self.source), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                        "list the repository's files")
        for rel in out.split("\0"):
            src = self.source / rel
            if not rel or not src.is_file() or src.is_symlink():  # deleted in the working tree, or a link
                continue
            dst = self.tree / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)

    def _make_venv(self) -> None:
        venv.EnvBuilder(symlinks=True, with_pip=False).create(self.venv)
        purelib = self._run([str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            "ask the new venv for its site-packages").strip()
        deps = [p for p in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(p)]
        (Path(purelib) / "_pccheck_mutation_deps.pth").write_text("".join(f"{p}\n" for p in deps))

    def _install(self) -> None:
        self._run([str(self.python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                   "-e", str(self.tree)], "install the copy editable into its venv")
        code = "import importlib\n" + "".join(
            f"print(importlib.import_module({name!r}).__file__)\n" for name in _PACKAGES)
        files = self._run([str(self.python), "-c", code], "import the copy").split()
        stray = [f for f in files if not Path(f).resolve().is_relative_to(self.tree.resolve())]
        if stray or len(files) != len(_PACKAGES):
            raise ScratchError(f"the scratch venv imports pccheck from outside the copy: {stray or files}")

    # -- editing and building ------------------------------------------------------------------------------
    def write(self, rel: str, text: str) -> None:
        """Writes a file of the copy (a new mtime, which is what the incremental builds look at)."""
        (self.tree / rel).write_text(text)

    def touch_core_sources(self) -> None:
        """After a header edit: every core source is out of date for the extension's mtime-based rebuild."""
        for src in (self.tree / "csrc").glob("*.cc"):
            src.touch()

    def build_cpp(self) -> None:
        if not self._cpp_configured:
            self._run(["cmake", "-S", str(self.tree / "tests" / "cpp"), "-B", str(self.cpp_build)], "configure the C++ tests")
            self._cpp_configured = True
        self._run(["cmake", "--build", str(self.cpp_build), "-j", self.jobs], "build the C++ tests")

    def build_extension(self) -> None:
        self._run([str(self.python), "-c", _BUILD_EXT.format(jobs=self.jobs), "build_ext", "--inplace",
                   "--build-temp", str(self.ext_build)], "build the extension module", cwd=self.tree)

    def cpp_tests(self) -> Path:
        return self.cpp_build / "pccheck_tests"

    def _run(self, cmd: list[str], what: str, cwd: Path | None = None) -> str:
        """Runs in `cwd`, by default the work directory: never the original tree, whose pccheck/ a `python -c`
        would import from the current directory."""
        proc = subprocess.run(cmd, cwd=cwd or self.work, env=self.env(), capture_output=True, text=True)
        if proc.returncode != 0:
            raise ScratchError(f"cannot {what} ({' '.join(cmd[:3])}...: exit {proc.returncode}):\n"
                               f"{(proc.stdout + proc.stderr)[-4000:]}")
        return proc.stdout


def default_work(root: Path) -> Path:
    return root / "build" / "mutation"
