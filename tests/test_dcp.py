"""pccheck.dcp: DTensor state saved by 2 ranks (gloo) through dcp.save / dcp.async_save (thread, process)
loads on 1 and 3 ranks; replicated tensors that differ are refused; a crash before the global commit and
damaged files fall back to the previous checkpoint; an untrusted directory runs no code."""
from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import pytest

import dcp_worker
from multirank_helpers import start, stderr, wait_all
from pccheck.dcp.sets import newest, scan_directory
from pccheck.errors import CheckpointError

WORKER = str(Path(__file__).with_name("dcp_worker.py"))


def ranks(cwd: Path, world: int, *args: str) -> list[int]:
    return wait_all(start([], world, cwd, argv=[sys.executable, WORKER, *args]), timeout=300)


def load_one(directory: Path, step: int | None = None) -> int:
    """Loads in this process (no process group) and returns the step read; fails on any tensor mismatch."""
    assert dcp_worker.main(["load", str(directory), *([str(step)] if step is not None else [])]) == 0
    found = newest(scan_directory(directory), step)
    assert found is not None
    return int(found[1].step)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """Steps 1, 2 by dcp.save, 3 by async_save (thread), 4 by async_save (process), all by 2 ranks."""
    d = tmp_path_factory.mktemp("dcp")
    codes = ranks(d, 2, "save", str(d / "ckpt"), "sync:1", "sync:2", "thread:3", "process:4")
    assert codes == [0, 0], stderr(d, 0)[-3000:]
    return d / "ckpt"


def test_one_set_of_two_rank_files_and_a_commit_file(saved):
    (s,) = scan_directory(saved)
    assert s.kind == "dcp" and s.world == 2 and s.error is None
    assert [c.step for c in s.checkpoints if c.valid][:2] == [4, 3]  # keep=2 newest are intact


def test_loads_on_one_process_without_a_process_group(saved):
    assert load_one(saved) == 4
    assert load_one(saved, step=3) == 3  # an older one on request


@pytest.mark.slow
def test_loads_on_three_ranks(saved, tmp_path):
    assert ranks(tmp_path, 3, "load", str(saved)) == [0, 0, 0], stderr(tmp_path, 0)
    assert all("loaded step 4; mismatches: []" in stderr(tmp_path, r) for r in range(3))


def test_plain_tensor_that_differs_between_ranks_is_refused_naming_it_and_the_ranks(saved, tmp_path):
    d = tmp_path / "ckpt"
    shutil.copytree(saved, d)
    assert ranks(tmp_path, 2, "diverge", str(d), "5") == [3, 3]
    err = stderr(tmp_path, 0)
    assert "tensor 'plain' is a plain (replicated) tensor but differs between ranks" in err
    assert "ranks [0] hold" in err and "ranks [1] hold" in err
    assert load_one(d) == 4  # the refused save left the newest checkpoint as it was


def test_crash_between_the_parts_and_the_global_commit_loads_the_previous_step(saved, tmp_path, caplog):
    d = tmp_path / "ckpt"
    shutil.copytree(saved, d)
    codes = ranks(tmp_path, 2, "killfinish", str(d), "5")
    assert codes[0] == -9
    (s,) = scan_directory(d)
    assert newest([s])[1].step == 4  # both parts of step 5 are durable, the global commit is not
    assert load_one(d) == 4
    # the next save retires the parts no global commit names, so they never push a named slot out
    assert ranks(tmp_path, 2, "save", str(d), "sync:6", "sync:7", "sync:8") == [0, 0], stderr(tmp_path, 0)
    assert "retired 1 record(s) no global commit names" in stderr(tmp_path, 0)
    assert load_one(d) == 8 and load_one(d, step=7) == 7


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def _payload_offset(path: Path, step: int) -> int:
    from pccheck import _core

    scan = _core.scan(str(path), False)
    rec = next(e for e in scan["entries"] if e.get("step") == step and e["valid"])
    g = scan["geometry"]
    return g["slots_offset"] + rec["slot"] * (g["table_bytes"] + g["slot_size"]) + g["table_bytes"]


def test_damaged_commit_falls_back_and_says_why(saved, tmp_path, caplog):
    d = tmp_path / "ckpt"
    shutil.copytree(saved, d)
    path = next(d.glob("dcp-*-commit.ckpt"))
    _flip(path, _payload_offset(path, 4) + 20)
    with caplog.at_level(logging.WARNING, logger="pccheck.dcp"):
        assert load_one(d) == 3
    assert "skipping step 4" in caplog.text and "checksum mismatch" in caplog.text


def test_damaged_part_is_never_returned(saved, tmp_path, caplog):
    """The chunk tables still verify, so a plain load finds the chunk when it reads it and stops with an
    error naming the file; a full scan names the rank; the adapter falls back to the previous step."""
    d = tmp_path / "ckpt"
    shutil.copytree(saved, d)
    path = next(d.glob("dcp-*-r00001.ckpt"))
    _flip(path, _payload_offset(path, 4) + 200)
    with pytest.raises(BaseException, match="r00001.ckpt: chunk 0 checksum mismatch"):
        dcp_worker.main(["load", str(d)])
    newest_cp = scan_directory(d, verify=True)[0].checkpoints[0]
    assert not newest_cp.valid and "rank 1:" in newest_cp.why and "checksum mismatch" in newest_cp.why
    import pccheck.dcp

    template = dcp_worker.state(0, None, zero=True)
    with caplog.at_level(logging.WARNING, logger="pccheck.dcp"):
        loaded = pccheck.dcp.Checkpointer(d, mode="sync").load_latest(template)
    assert loaded.step == 3 and dcp_worker.mismatches(loaded.state, 3) == []
    assert "cannot load step 4" in caplog.text


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['PCCHECK_TEST_MARKER']}",))


def test_untrusted_directory_runs_no_code(tmp_path, monkeypatch):
    """A value pickled to run code (its CRCs valid) and a hostile DCP `.metadata` beside it: the load stops
    with an error and nothing runs."""
    import pickle

    import torch.distributed.checkpoint as dcp

    import pccheck.dcp

    marker = tmp_path / "ran"
    monkeypatch.setenv("PCCHECK_TEST_MARKER", str(marker))
    d = tmp_path / "ckpt"
    dcp.save({"x": _RunsCode()}, storage_writer=pccheck.dcp.Writer(d))
    assert not marker.exists()  # pickling does not run it; unpickling would
    (d / ".metadata").write_bytes(pickle.dumps(_RunsCode()))  # what FileSystemReader would unpickle
    with pytest.raises(BaseException, match="not plain data") as info:
        dcp.load({"x": None}, storage_reader=pccheck.dcp.Reader(d))
    assert "weights_only=True" in str(info.value) and "system" in str(info.value)
    assert not marker.exists()
    pccheck.dcp.close_all()


def _save_one_process(d: Path, steps: list[int], offset: float = 0.0) -> None:
    """dcp.save without a process group (a 1-rank set), the state of each step plus `offset`."""
    import torch.distributed.checkpoint as dcp

    import pccheck.dcp

    for step in steps:
        sd = dcp_worker.state(step, None)
        sd["plain"] = sd["plain"] + offset
        dcp.save(sd, storage_writer=pccheck.dcp.Writer(d, step=step, chunk_size=4096))
    pccheck.dcp.close_all()


def test_missing_or_foreign_rank_file_is_one_clear_error(saved, tmp_path):
    """A rank file of another run with the same name and the same seqs is not the part the commit names."""
    d = tmp_path / "ckpt"
    shutil.copytree(saved, d)
    for f in d.glob("dcp-*-r00001.ckpt"):
        f.unlink()
    (s,) = scan_directory(d)
    assert not any(c.valid for c in s.checkpoints)
    assert "rank 1:" in s.checkpoints[0].why and "is missing" in s.checkpoints[0].why
    with pytest.raises(CheckpointError, match="no valid DCP checkpoint"):
        pccheck_reader_choose(d)
    mine, other = tmp_path / "mine", tmp_path / "other"
    _save_one_process(mine, [1, 2])
    _save_one_process(other, [1, 2], offset=1.0)
    (part,) = mine.glob("dcp-*-r00000.ckpt")
    shutil.copyfile(next(other.glob("dcp-*-r00000.ckpt")), part)
    (s,) = scan_directory(mine)
    assert [c.valid for c in s.checkpoints] == [False, False]
    assert "holds another payload than the global commit names" in s.checkpoints[0].why


def test_the_newest_checkpoint_is_the_newest_committed_not_the_highest_step(tmp_path):
    """A fresh run in an old directory: its step 5 is newer than the old run's step 10, in any file set."""
    import torch

    from pccheck import catalog
    from pccheck.checkpointer import Checkpointer

    _save_one_process(tmp_path, [10])
    with Checkpointer(tmp_path, max_async=1, keep=1) as ck:
        assert ck.save(5, {"step": 5, "w": torch.ones(3)}).wait()
    assert newest(scan_directory(tmp_path))[0].label == "pccheck.ckpt"
    assert catalog.newest_committed_step(tmp_path) == 5
    _save_one_process(tmp_path, [3])
    assert catalog.newest_committed_step(tmp_path) == 3 and load_one(tmp_path) == 3


def pccheck_reader_choose(d: Path):
    from pccheck.dcp.reader import choose

    return choose(d)


# -- pccheck-inspect on DCP sets -------------------------------------------------------------------------
def inspect_json(capsys, *argv: str) -> tuple[int, dict]:
    import json

    from pccheck.tools import inspect as cli

    status = cli.main([*argv, "--json"])
    return status, json.loads(capsys.readouterr().out)


def test_inspect_shows_rank_files_global_commits_and_the_pick(saved, capsys):
    status, doc = inspect_json(capsys, str(saved))
    (s,) = doc["sets"]
    assert status == 0 and s["kind"] == "dcp" and s["world"] == 2 and len(s["files"]) == 3
    newest_cp = s["checkpoints"][0]
    assert newest_cp["step"] == 4 and newest_cp["valid"] and [p["rank"] for p in newest_cp["ranks"]] == [0, 1]
    assert doc["chosen"]["step"] == 4 and doc["chosen"]["set"] == s["label"]
    assert {t["name"]: t["shape"] for t in doc["state"]["tensors"]}["w1"] == [4, 10]  # whole, not a shard


def test_inspect_verify_reads_every_part(saved, tmp_path, capsys):
    d = tmp_path / "ckpt"
    shutil.copytree(saved, d)
    path = next(d.glob("dcp-*-r00001.ckpt"))
    _flip(path, _payload_offset(path, 4) + 200)
    assert inspect_json(capsys, str(d))[0] == 0  # headers alone cannot see it
    status, doc = inspect_json(capsys, str(d), "--verify")
    bad = doc["sets"][0]["checkpoints"][0]
    assert status == 1 and not bad["valid"] and bad["reason"].startswith("rank 1: ")
    assert doc["chosen"]["step"] == 3 and doc["skipped"][0]["step"] == 4


def test_inspect_exports_the_whole_state_to_safetensors(saved, tmp_path, capsys):
    from pccheck import payload

    out = tmp_path / "full.safetensors"
    status, doc = inspect_json(capsys, str(saved), "--export", str(out), "--tensor", "w1")
    assert status == 0 and doc["tensor"]["shape"] == [4, 10] and doc["export"]["tensors"] == 4
    state = payload.decode(bytearray(out.read_bytes()))
    assert dcp_worker.mismatches(state, 4) == []  # every tensor whole, bf16 included, and the step value


def test_inspect_tells_a_single_process_file_and_a_rank_set_apart(saved, tmp_path, capsys):
    """The bug: a pccheck.ckpt beside a 2-rank set was judged with it as one set of 3 rank files."""
    import torch

    from pccheck.checkpointer import Checkpointer

    d = tmp_path / "ckpt"
    shutil.copytree(saved, d)
    with Checkpointer(d, max_async=1, keep=1) as ck:
        assert ck.save(50, {"step": 50, "w": torch.ones(3)}).wait()
    status, doc = inspect_json(capsys, str(d))
    assert status == 0 and [(s["kind"], s["world"], s["exit_status"]) for s in doc["sets"]] == [("dcp", 2, 0), ("file", 1, 0)]
    assert doc["chosen"]["set"] == "pccheck.ckpt" and doc["chosen"]["step"] == 50  # the newest by commit time
    assert "rank files" not in doc["message"]


def test_inspect_of_garbage_named_like_a_set_is_one_line(tmp_path, capsys):
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "dcp-0123abcd-w00002-commit.ckpt").write_bytes(b"PCCKSUPR" + bytes(100))
    status, doc = inspect_json(capsys, str(d))
    assert status == 2 and "unusable" in doc["sets"][0]["error"] and doc["chosen"] is None


@pytest.mark.slow
def test_two_ranks_sigkilled_at_random_moments_while_saving_leave_the_newest_complete_step(tmp_path):
    """Each round: 2 ranks save in a loop, both are SIGKILLed at a random moment; a load returns a step at
    least as new as the newest one complete before the kill, every tensor of that one step."""
    import random
    import time

    from multirank_helpers import sigkill

    rng = random.Random(1)
    d = tmp_path / "ckpt"
    before = 0
    for r in range(8):
        first = 1 + 1000 * r
        procs = start([], 2, tmp_path, argv=[sys.executable, WORKER, "loop", str(d), str(first)])
        deadline = time.monotonic() + 120
        while (newest(scan_directory(d)) or (None, None))[1] is None or newest(scan_directory(d))[1].step < first:
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), stderr(tmp_path, 0)[-2000:]
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))
        before = newest(scan_directory(d))[1].step
        for p in procs:
            sigkill(p)
        loaded = load_one(d)  # fails on any tensor that is not of the loaded step
        assert loaded >= before


class _GlobalCommitFails(Exception):
    pass


def test_parts_that_never_became_global_never_push_out_a_kept_checkpoint(tmp_path):
    """keep=2: steps 5, 6, 7 write their parts but their global commits fail. Without retiring those parts the
    rank file's window (keep + max_async newest records) would drop step 3's part and step 7 would overwrite
    it, while steps 4 and 3 are still the two kept global checkpoints."""
    import torch.distributed.checkpoint as dcp

    import pccheck.dcp

    class FailsAtTheGlobalCommit(pccheck.dcp.Writer):
        def finish(self, metadata, results):
            raise _GlobalCommitFails()

    d = tmp_path / "ckpt"
    for step in range(1, 8):
        writer = (pccheck.dcp.Writer if step <= 4 else FailsAtTheGlobalCommit)(d, step=step, chunk_size=4096)
        try:
            dcp.save(dcp_worker.state(step, None), storage_writer=writer)
        except BaseException as exc:  # DCP wraps it in a CheckpointException (a BaseException)
            assert step > 4 and "_GlobalCommitFails" in repr(exc.failures if hasattr(exc, "failures") else exc)
    assert load_one(d) == 4 and load_one(d, step=3) == 3
    dcp.save(dcp_worker.state(8, None), storage_writer=pccheck.dcp.Writer(d, step=8, chunk_size=4096))
    assert load_one(d) == 8 and load_one(d, step=4) == 4
    pccheck.dcp.close_all()


@pytest.mark.parametrize("metadata", [
    {"state_dict": {"w0": {"dtype": "no_such_dtype", "size": [12, 6], "chunks": [], "requires_grad": False}}},
    {"state_dict": {"w0": {"size": "x"}}, "storage": [["w0", None, None, [9, 0, 1, "float32", []]]]},
    {"state_dict": [], "storage": 7},
])
def test_hostile_metadata_with_valid_checksums_is_one_clear_error(saved, tmp_path, capsys, metadata):
    """A global commit whose checksums are right but whose metadata is not (a hostile or buggy writer)."""
    from pccheck import _core
    from pccheck.dcp import commit as commit_doc
    from pccheck.dcp.reader import Reader

    d = tmp_path / "ckpt"
    shutil.copytree(saved, d)
    (commit_file,) = d.glob("dcp-*-commit.ckpt")
    doc = newest(scan_directory(d))[1].doc
    raw = commit_doc.encode({**{k: v for k, v in doc.items() if k != "format"}, "metadata": metadata})
    commit_file.unlink()
    store = _core.Store(str(commit_file), slot_size=1 << 20, max_async=1, keep=1, chunk_size=4096, threads=1,
                        memory_budget=1 << 20)
    seq = store.begin(9, len(raw), True)
    store.write_host(seq, raw, [])
    assert store.wait(seq, None) == "committed"
    store.close()
    with pytest.raises(CheckpointError, match="malformed|unknown dtype"):
        Reader(d).read_metadata()
    from pccheck.tools import inspect as cli

    status = cli.main([str(d)])
    assert status in (1, 2) and "internal error" not in capsys.readouterr().err


def test_a_state_that_does_not_fit_is_an_error_not_a_fallback(tmp_path):
    """Only a damaged part sends the adapter to an older checkpoint; a template of other shapes (other model
    flags) must stop the resume, never start it from scratch as if there were no checkpoint."""
    import torch

    import pccheck.dcp

    _save_one_process(tmp_path, [1, 2])
    template = dcp_worker.state(0, None, zero=True)
    template["w0"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match="w0"):
        pccheck.dcp.Checkpointer(tmp_path, mode="sync").load_latest(template)
