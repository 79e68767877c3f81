"""Power loss (docs/power-loss.md): on a file system that drops what was not synced, a writer killed and then
a power cut never lose a checkpoint reported durable, and a resume never builds on one that only the page
cache held. Checkpoints are pccheck's and the torch.save baseline's, each loaded through its own load path."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from crashfs.fixtures import seeds
from crashfs.mount import CrashFS
from powerloss_helpers import KINDS, Child, command_writer, kill_and_cut_loop, load, open_checkpointer, step_of


def _trust(kind: str, directory: Path, how: str) -> int:
    """What a resuming run B builds on: the checkpoint it loads, or the step it reports as committed."""
    if how == "load":
        return step_of(load(kind, directory))
    return open_checkpointer(kind, directory).last_committed_step() or 0


@pytest.mark.parametrize("how", ["load", "report"])
@pytest.mark.parametrize("kind", KINDS)
def test_resume_then_power_cut_keeps_the_step_it_trusted(crashfs: CrashFS, kind: str, how: str):
    """Run A commits step 1, then writes step 2 but dies before any of step 2's syncs; run B loads (or reports)
    step 2 from the page cache; a power cut follows before B's own first commit: step 2 survives."""
    directory = crashfs.path / "ckpt"
    with Child(partial(command_writer, kind, directory)) as a:
        a.ask(1)
        with crashfs.syncs_ignored():  # A's syncs of step 2 never happen
            a.ask(2)
            a.kill()
            a.reap()
    assert _trust(kind, directory, how) == 2
    crashfs.cut(seed=seeds(11)[0], data="durable")
    assert step_of(load(kind, directory)) == 2, f"the step a resume trusted was lost: {crashfs.reports[-1]}"


@pytest.mark.parametrize("kind", KINDS)
def test_first_checkpoint_in_a_new_directory_survives_a_power_cut(crashfs: CrashFS, kind: str):
    """The checkpoint directory and its missing parents are created durably before the first commit."""
    directory = crashfs.path / "runs" / "exp" / "ckpt"
    with Child(partial(command_writer, kind, directory)) as writer:
        writer.ask(1)
        writer.kill()
        writer.reap()
    crashfs.cut(seed=seeds(12)[0], data="durable")
    assert step_of(load(kind, directory)) == 1, f"the first durable checkpoint was lost: {crashfs.reports[-1]}"


@pytest.mark.parametrize("kind", KINDS)
def test_directory_a_crashed_run_left_unsynced_survives_a_power_cut(crashfs: CrashFS, kind: str):
    """A run created the directory and died before syncing it; the next run's first checkpoint survives a cut."""
    directory = crashfs.path / "ckpt"
    directory.mkdir()  # its entry only in the page cache
    with Child(partial(command_writer, kind, directory)) as writer:
        writer.ask(1)
        writer.kill()
        writer.reap()
    crashfs.cut(seed=seeds(14)[0], data="durable")
    assert step_of(load(kind, directory)) == 1, f"the first durable checkpoint was lost: {crashfs.reports[-1]}"


def test_torchsave_prune_is_durable(crashfs: CrashFS):
    """After save() returns, a cut leaves exactly the `keep` newest checkpoint files (the prune is synced)."""
    directory = crashfs.path / "ckpt"
    with Child(partial(command_writer, "torchsave", directory)) as writer:
        for step in range(1, 6):
            writer.ask(step)
        writer.kill()
        writer.reap()
    crashfs.cut(seed=seeds(13)[0], data="durable")
    assert sorted(p.name for p in directory.iterdir()) == ["ckpt-00000004.pt", "ckpt-00000005.pt"]


def test_kill_and_power_cut_quick(crashfs: CrashFS):
    kill_and_cut_loop(crashfs, "pccheck", seeds(1, 2, 3), max_changes=200)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_kill_and_power_cut_many_seeds(crashfs: CrashFS, kind: str):
    kill_and_cut_loop(crashfs, kind, seeds(*range(100, 124)), max_changes=300)
