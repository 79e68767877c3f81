"""The mutation check: plants each bug of mutations.toml, one at a time, in a scratch copy of the tree and
fails unless every one makes at least one of the tests named for it fail.

    scripts/mutation-check.sh                   # every mutation (CI runs this after the test suite)
    scripts/mutation-check.sh --only NAME ...   # some of them
    scripts/mutation-check.sh --list            # what is planted and what must catch it

Order: the list is checked against the tree (each edit matches exactly once, each named test exists); the
scratch copy is made (scratch.py); the named tests run once unmutated and must pass there without skipping
(a test that fails or skips anyway would make any mutation look caught, or catch nothing); then for each
mutation: apply, rebuild what the edit touched, run its C++ filters then its pytest ids (stopping at the
first failure), restore. One line per mutation and a summary; exit 0 only when every mutation was caught.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from mutation_list import ListError, Mutation, load, missing_tests, mutated_texts
from scratch import Scratch, ScratchError, default_work

ROOT = Path(__file__).resolve().parents[2]
_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)
_SKIPPED = re.compile(r"^SKIPPED \[\d+\] (.*)$", re.MULTILINE)
_CPP_FAILED = re.compile(r"^\[ FAIL \] (\w+)", re.MULTILINE)
_CPP_RAN = re.compile(r"^(\d+) tests, (\d+) failed$", re.MULTILINE)


class Broken(Exception):
    """A run that says nothing about the mutation (a build that fails, a test that cannot be collected)."""


@dataclass
class Run:
    failed: Optional[str]  # the first test that failed (or timed out), None when all passed
    note: str = ""


def _run(cmd: list[str], env: dict[str, str], cwd: Path, timeout_s: float) -> tuple[Optional[int], str]:
    """(exit status or None on timeout, output); the whole process group goes on timeout (tests spawn)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out


def run_cpp(scratch: Scratch, name: str, env: dict[str, str], timeout_s: float) -> Run:
    iterations = env.get("CRASH_ITERS", "4")  # kill -9 rounds of the crash test, its command-line argument
    code, out = _run([str(scratch.cpp_tests()), iterations, name], scratch.env(env), scratch.tree, timeout_s)
    if code is None:
        return Run(f"C++ {name}", f"timed out after {timeout_s:.0f} s")
    ran = _CPP_RAN.search(out)
    if ran and int(ran.group(1)) == 0:
        raise Broken(f"C++ filter {name!r} runs no test")
    if code == 0:
        return Run(None)
    failed = _CPP_FAILED.search(out)
    if failed:
        return Run(f"C++ {failed.group(1)}")
    return Run(f"C++ {name}", f"crashed (exit {code})")  # a signal or an escaped exception: a failure too


def run_pytest(scratch: Scratch, nodes: tuple[str, ...], timeout_s: float, tag: str, stop_first: bool = True) -> Run:
    basetemp = scratch.tmp / tag
    cmd = [str(scratch.python), "-m", "pytest", "-q", "-m", "", "-p", "no:cacheprovider", "-rfEs",
           "--basetemp", str(basetemp), *(["-x"] if stop_first else []), *nodes]
    code, out = _run(cmd, scratch.env(), scratch.tree, timeout_s)
    if code is None:
        return Run(f"pytest {nodes[0]}", f"timed out after {timeout_s:.0f} s")
    if code == 0:
        skipped = _SKIPPED.findall(out)
        return Run(None, f"skipped: {'; '.join(skipped)}" if skipped else "")
    failed = _FAILED.findall(out)
    if code == 1 and failed:
        return Run(failed[0], "; ".join(failed[1:]) if not stop_first else "")
    raise Broken(f"pytest exit {code} (not a test failure: collection or usage error):\n{out[-3000:]}")


def baseline(scratch: Scratch, mutations: list[Mutation]) -> None:
    """Every named test passes, and none skips, in the unmutated copy."""
    nodes = tuple(dict.fromkeys(n for m in mutations for n in m.pytest))
    if nodes:
        res = run_pytest(scratch, nodes, 1800, "baseline", stop_first=False)
        if res.failed:
            raise Broken(f"unmutated, these tests fail already: {res.failed} {res.note}")
        if res.note:
            raise Broken(f"unmutated, tests skip here and so can catch nothing: {res.note}")
    runs = {(f, tuple(sorted(m.cpp_env.items()))): m for m in mutations for f in m.cpp}
    if runs:
        scratch.build_cpp()
    for (name, _), m in runs.items():
        res = run_cpp(scratch, name, m.cpp_env, m.timeout_s)
        if res.failed:
            raise Broken(f"unmutated, {res.failed} fails already {res.note} (environment {m.cpp_env})")


def check(scratch: Scratch, m: Mutation) -> Run:
    """Plants m, runs its tests, and restores the copy (the extension module too, when m rebuilt it)."""
    texts = mutated_texts(scratch.tree, m)
    originals = {rel: (scratch.tree / rel).read_text() for rel in texts}
    try:
        for rel, text in texts.items():
            scratch.write(rel, text)
        return _tests(scratch, m)
    finally:
        for rel, text in originals.items():
            scratch.write(rel, text)
        if m.touches_core and m.pytest:
            _build_extension(scratch, m)


def _tests(scratch: Scratch, m: Mutation) -> Run:
    if m.cpp:
        try:
            scratch.build_cpp()
        except ScratchError as exc:
            raise Broken(f"the mutant does not build: {exc}") from None
        for name in m.cpp:
            res = run_cpp(scratch, name, m.cpp_env, m.timeout_s)
            if res.failed:
                return res
    if m.pytest:
        if m.touches_core:
            try:
                _build_extension(scratch, m)
            except ScratchError as exc:
                raise Broken(f"the mutant does not build: {exc}") from None
        return run_pytest(scratch, m.pytest, m.timeout_s, m.name)
    return Run(None)


def _build_extension(scratch: Scratch, m: Mutation) -> None:
    if any(e.file.endswith(".h") for e in m.edits):
        scratch.touch_core_sources()  # the rebuild looks at each source's mtime, not at the headers it includes
    scratch.build_extension()


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run these mutations only")
    ap.add_argument("--work", type=Path, default=default_work(ROOT), help="scratch directory (recreated)")
    ap.add_argument("--list", action="store_true", help="print the mutations and the tests that must catch them")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    try:
        mutations = load()
        problems = []
        for m in mutations:
            try:
                mutated_texts(ROOT, m)
            except ListError as exc:
                problems.append(str(exc))
            problems += [f"{m.name}: {p}" for p in missing_tests(ROOT, m)]
        if problems:
            raise ListError("the mutation list does not fit the tree:\n  " + "\n  ".join(problems))
        if args.only:
            unknown = sorted(set(args.only) - {m.name for m in mutations})
            if unknown:
                raise ListError(f"no such mutation: {', '.join(unknown)}")
            mutations = [m for m in mutations if m.name in args.only]
    except ListError as exc:
        print(f"mutation check: {exc}", file=sys.stderr)
        return 1
    if args.list:
        for m in mutations:
            tests = [f"C++ {c}" for c in m.cpp] + list(m.pytest)
            print(f"{m.name}\n  breaks: {m.guarantee}\n  bug: {m.bug}\n  caught by: {', '.join(tests)}")
        return 0

    scratch = Scratch(ROOT, args.work)
    try:
        scratch.create()
        print(f"mutation check: {len(mutations)} mutations; scratch copy, venv and install in {args.work} "
              f"({time.monotonic() - t0:.0f} s)", flush=True)
        t1 = time.monotonic()
        baseline(scratch, mutations)
        print(f"baseline: the named tests pass unmutated, none skips ({time.monotonic() - t1:.0f} s)", flush=True)
    except (ScratchError, Broken) as exc:
        print(f"mutation check: {exc}", file=sys.stderr)
        return 1

    survived, broken = [], []
    width = max(len(m.name) for m in mutations)
    for m in mutations:
        t1 = time.monotonic()
        try:
            res = check(scratch, m)
        except (Broken, ScratchError, ListError) as exc:
            broken.append(m.name)
            print(f"  ERROR     {m.name:<{width}}  {exc}", flush=True)
            continue
        took = time.monotonic() - t1
        if res.failed:
            note = f"; {res.note}" if res.note else ""
            print(f"  caught    {m.name:<{width}}  by {res.failed}{note} ({took:.1f} s)", flush=True)
        else:
            survived.append(m.name)
            tests = [f"C++ {c}" for c in m.cpp] + list(m.pytest)
            print(f"  SURVIVED  {m.name:<{width}}  every test passed: {', '.join(tests)}{'; ' + res.note if res.note else ''}"
                  f" ({took:.1f} s)", flush=True)
    caught = len(mutations) - len(survived) - len(broken)
    print(f"summary: {caught} of {len(mutations)} caught, {len(survived)} survived, {len(broken)} errors; "
          f"{time.monotonic() - t0:.0f} s in all")
    for name in survived:
        print(f"  survived: {name}: a test is missing, or it is not a bug (then drop it from the list, saying why)")
    return 0 if caught == len(mutations) else 1


if __name__ == "__main__":
    sys.exit(main())
