"""pccheck-inspect: every exit status, the JSON schema, the safetensors export and hostile input.

Most cases call the tool in-process (`main(argv)`); a few run the real console script to check what a user
sees (one line, no traceback). Helpers here are reused by test_inspect_fuzz.py.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from pccheck import _core
from pccheck.checkpointer import Checkpointer
from pccheck.tools import inspect as cli
from pccheck.tools.inspect_layout import InspectError
from pccheck.tools.inspect_report import Options, inspect

BLOCK = 4096
CHUNK = 4096  # small chunks: several per payload, so a damaged chunk is not the header's
EXE = shutil.which("pccheck-inspect", path=os.path.dirname(sys.executable)) or "pccheck-inspect"


# -- building checkpoints ------------------------------------------------------------------------------
def small_state(step: int, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    g = torch.Generator().manual_seed(step)
    return {
        "step": step,
        "model": {"w": torch.randn(64, 48, generator=g).to(dtype), "b": torch.zeros(48, dtype=dtype)},
        "optimizer": {"state": {0: {"exp_avg": torch.ones(8)}}, "param_groups": [{"lr": 0.1, "betas": (0.9, 0.95), "params": [0]}]},
        "scheduler": {"last_epoch": step, "_last_lr": [0.1]},
        "data": {"position": step * 4, "seed": 0, "dataset": "tiny"},
        "rng": {"python": {"state": [1, 2, 3]}, "torch": torch.arange(16, dtype=torch.uint8)},
        "config": {"d_model": 48, "dtype": str(dtype).removeprefix("torch.")},
        "special": {"nan": float("nan"), "tuple": (1, 2)},
    }


def make_pccheck(directory: Path, steps: list[int], dtype: torch.dtype = torch.float32, chunk: int = CHUNK) -> Path:
    """A closed pccheck file with one committed checkpoint per step (each waited for: seq order = step order)."""
    with Checkpointer(directory, max_async=1, keep=2, threads=1, chunk_size=chunk) as ck:
        for step in steps:
            assert ck.save(step, small_state(step, dtype)).wait()
    return directory / "pccheck.ckpt"


def records(path: Path) -> list[dict[str, Any]]:
    scan = _core.scan(str(path), False)
    return sorted(scan.get("records", scan.get("entries")), key=lambda r: -r["seq"])


def geometry(path: Path) -> dict[str, Any]:
    scan = _core.scan(str(path), False)
    return scan.get("geometry", scan)


def ring_offset(path: Path, record: dict[str, Any]) -> int:
    return geometry(path)["ring_offset"] + record["index"] * BLOCK


def payload_offset(path: Path, record: dict[str, Any]) -> int:
    g = geometry(path)
    return g["slots_offset"] + record["slot"] * (g["table_bytes"] + g["slot_size"]) + g["table_bytes"]


def flip(path: Path, offset: int, mask: int = 0x01) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ mask]))


def run_cli(*args: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout, **kw)


def call(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    status = cli.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def pcfile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Steps 10, 20, 30 committed (keep=2 plus one in flight: all three stay)."""
    return make_pccheck(tmp_path_factory.mktemp("pc"), [10, 20, 30])


@pytest.fixture
def pccopy(pcfile: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ck" / "pccheck.ckpt"
    dst.parent.mkdir()
    shutil.copyfile(pcfile, dst)
    return dst


@pytest.fixture(scope="module")
def tsdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pccheck.torchsave import TorchSaveCheckpointer

    d = tmp_path_factory.mktemp("ts")
    ck = TorchSaveCheckpointer(d, keep=2)
    for step in (5, 6):
        ck.save(step, small_state(step))
    return d


# -- exit status 0 and the JSON schema ---------------------------------------------------------------
TOP = {
    "schema": str, "path": str, "kind": (str, type(None)), "verified": bool, "files": list, "checkpoints": list,
    "latest_valid_step": (int, type(None)), "latest_valid_seq": (int, type(None)), "skipped": list,
    "chosen": (dict, type(None)), "sets": list, "state": (dict, type(None)), "tensor": (dict, type(None)),
    "export": (dict, type(None)), "exit_status": int, "message": str, "error": (str, type(None)),
}
CHECKPOINT = {
    "file": str, "seq": (int, type(None)), "ring_index": (int, type(None)), "slot": (int, type(None)),
    "step": (int, type(None)), "time_ns": (int, type(None)), "time": (str, type(None)),
    "payload_bytes": (int, type(None)), "chunk_size": (int, type(None)), "n_chunks": (int, type(None)),
    "valid": bool, "reason": (str, type(None)), "verified": bool,
}
FILE = {"path": str, "format": str, "format_version": (int, type(None)), "bytes": int, "geometry": (dict, type(None)),
        "verify": (dict, type(None))}
GEOMETRY = ("slot_count", "slot_size", "table_bytes", "ring_entries", "ring_offset", "slots_offset", "file_size",
            "keep", "max_async", "created_ns", "chunk_size")
SET = {"label": str, "kind": str, "world": int, "set_id": (str, type(None)), "files": list, "error": (str, type(None)),
       "checkpoints": list, "chosen": (dict, type(None)), "exit_status": int, "message": str}
SET_CHECKPOINT = {"seq": int, "gseq": (int, type(None)), "step": (int, type(None)), "time_ns": (int, type(None)),
                  "time": (str, type(None)), "valid": bool, "reason": (str, type(None)), "ranks": (list, type(None))}
STATE = {"header_checksummed": bool, "tensor_count": int, "tensor_bytes": int,
         "tensors": list, "summary": dict}
TENSOR = {"name": str, "dtype": str, "shape": list, "count": int, "finite": int, "nan": int, "posinf": int,
          "neginf": int, "min": (float, int, str, type(None)), "max": (float, int, str, type(None)),
          "mean": (float, int, str, type(None))}


def check_keys(obj: dict[str, Any], spec: dict[str, Any]) -> None:
    assert set(obj) == set(spec), set(obj) ^ set(spec)
    for key, types in spec.items():
        assert isinstance(obj[key], types), (key, obj[key])


def check_schema(doc: dict[str, Any]) -> None:
    """The documented schema (docs/inspect.md), field by field."""
    check_keys(doc, TOP)
    assert doc["schema"] == "pccheck-inspect/1"
    for f in doc["files"]:
        check_keys(f, FILE)
        if f["geometry"] is not None:
            assert set(f["geometry"]) == set(GEOMETRY)
    for c in doc["checkpoints"]:
        check_keys(c, CHECKPOINT)
        assert (c["reason"] is None) == c["valid"]
    if doc["chosen"] is not None:
        assert set(doc["chosen"]) == {"file", "seq", "step", "valid", "set", "why"}
    for s in doc["sets"]:
        check_keys(s, SET)
        for c in s["checkpoints"]:
            check_keys(c, SET_CHECKPOINT)
    for s in doc["skipped"]:
        assert set(s) == {"seq", "step", "file", "reason"}
    if doc["state"] is not None:
        check_keys(doc["state"], STATE)
        for t in doc["state"]["tensors"]:
            assert set(t) == {"name", "dtype", "shape", "bytes"}
    if doc["tensor"] is not None:
        check_keys(doc["tensor"], TENSOR)


def test_valid_file_json_schema(capsys, pcfile):
    status, out, err = call(capsys, str(pcfile), "--json")
    assert status == 0 and err == ""
    doc = json.loads(out)
    check_schema(doc)
    assert doc["kind"] == "pccheck" and doc["latest_valid_step"] == 30 and doc["exit_status"] == 0
    assert [(c["step"], c["valid"]) for c in doc["checkpoints"]] == [(30, True), (20, True), (10, True)]
    assert [c["seq"] for c in doc["checkpoints"]] == sorted((c["seq"] for c in doc["checkpoints"]), reverse=True)
    assert doc["chosen"]["step"] == 30 and doc["skipped"] == []
    geo = doc["files"][0]["geometry"]
    assert geo["chunk_size"] == CHUNK and geo["keep"] == 2 and geo["slot_count"] == 3
    state = doc["state"]
    assert state["header_checksummed"]
    names = {t["name"]: t for t in state["tensors"]}
    assert names["model/w"] == {"name": "model/w", "dtype": "F32", "shape": [64, 48], "bytes": 64 * 48 * 4}
    summary = state["summary"]
    assert summary["step"] == 30 and summary["data"]["position"] == 120 and summary["rng"] == ["python", "torch"]
    assert summary["optimizer"]["param_groups"] == 1 and summary["optimizer"]["hyperparameters"]["lr"] == 0.1
    assert summary["scheduler"]["last_epoch"] == 30 and summary["config"]["d_model"] == 48


def test_directory_and_human_overview(capsys, pcfile):
    status, out, _ = call(capsys, str(pcfile.parent))
    assert status == 0
    for text in ("slots", "seq", "chosen", "model/w", "optimizer", "exit status 0"):
        assert text in out


def test_trainer_checkpoint_summary(tmp_path, capsys):
    """The real trainer's state: step, optimizer and scheduler, RNGs, data position and config."""
    flags = ["--checkpointer", "pccheck", "--checkpoint-dir", str(tmp_path / "ck"), "--training-steps", "4",
             "--checkpoint-freq", "2", "--sequence-length", "16", "--batch-size", "2", "--threads", "1"]
    proc = subprocess.run([sys.executable, "-m", "pccheck.demo", *flags], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    status, out, _ = call(capsys, str(tmp_path / "ck"), "--json", "--verify")
    doc = json.loads(out)
    check_schema(doc)
    assert status == 0 and doc["latest_valid_step"] == 4 and all(c["verified"] for c in doc["checkpoints"])
    s = doc["state"]["summary"]
    assert s["step"] == 4 and s["data"]["position"] == 4 and {"python", "numpy", "torch"} <= set(s["rng"])
    assert s["optimizer"]["state_keys"] == ["exp_avg", "exp_avg_sq", "step"] and "n_layers" in s["config"]


def test_tensor_statistics(capsys, tmp_path):
    path = make_pccheck(tmp_path, [1])
    status, out, _ = call(capsys, str(path), "--json", "--tensor", "model/w")
    doc = json.loads(out)
    check_schema(doc)
    want = small_state(1)["model"]["w"].double()
    t = doc["tensor"]
    assert status == 0 and t["count"] == want.numel() and t["nan"] == t["posinf"] == t["neginf"] == 0
    assert t["min"] == float(want.min()) and t["max"] == float(want.max())
    assert abs(t["mean"] - float(want.mean())) < 1e-12


def test_tensor_statistics_nan_inf(capsys, tmp_path):
    state = {"x": torch.tensor([1.0, float("nan"), float("inf"), -float("inf"), -2.0], dtype=torch.bfloat16)}
    with Checkpointer(tmp_path, max_async=1, keep=1, threads=1, chunk_size=CHUNK) as ck:
        ck.save(1, state).wait()
    status, out, _ = call(capsys, str(tmp_path), "--json", "--tensor", "x")
    t = json.loads(out)["tensor"]
    assert (t["nan"], t["posinf"], t["neginf"], t["finite"], t["min"], t["max"]) == (1, 1, 1, 2, -2.0, 1.0)


def test_step_chooses_an_older_checkpoint(capsys, pcfile):
    status, out, _ = call(capsys, str(pcfile), "--json", "--step", "20")
    doc = json.loads(out)
    assert status == 0 and doc["chosen"]["step"] == 20 and doc["state"]["summary"]["step"] == 20
    assert doc["latest_valid_step"] == 30 and doc["chosen"]["why"] == "requested with --step 20"


# -- exit status 1 and 2 ---------------------------------------------------------------------------------
def test_corrupt_newest_record_exit_1(capsys, pccopy):
    flip(pccopy, ring_offset(pccopy, records(pccopy)[0]) + 30)  # inside the record's step field
    status, out, err = call(capsys, str(pccopy), "--json")
    doc = json.loads(out)
    check_schema(doc)
    assert status == 1 == doc["exit_status"] and doc["chosen"]["step"] == 20 and doc["latest_valid_step"] == 20
    assert doc["checkpoints"][0]["reason"] == "record checksum mismatch"
    assert doc["skipped"] and "record checksum mismatch" in doc["skipped"][0]["reason"]
    assert "newest checkpoint is corrupt" in err and len(err.strip().splitlines()) == 1


def test_corrupt_payload_found_only_by_verify(capsys, pccopy):
    newest = records(pccopy)[0]
    flip(pccopy, payload_offset(pccopy, newest) + newest["payload_len"] - 5)  # last chunk: not the header's
    status, out, _ = call(capsys, str(pccopy), "--json")
    assert status == 0 and json.loads(out)["chosen"]["step"] == 30  # the overview reads no tensor data
    status, out, _ = call(capsys, str(pccopy), "--json", "--verify")
    doc = json.loads(out)
    assert status == 1 and doc["chosen"]["step"] == 20 and doc["verified"]
    assert "checksum mismatch" in doc["checkpoints"][0]["reason"] and doc["files"][0]["verify"]["bytes"] > 0
    # --tensor reads the payload through the core, which checks it too: a load would fall back the same way.
    status, out, _ = call(capsys, str(pccopy), "--json", "--tensor", "model/w")
    doc = json.loads(out)
    assert status == 1 and doc["tensor"]["count"] == 64 * 48 and doc["chosen"]["step"] == 20


def test_corrupt_payload_header_is_caught_without_verify(capsys, pccopy):
    newest = records(pccopy)[0]
    flip(pccopy, payload_offset(pccopy, newest) + 20)  # inside the safetensors header: chunk 0
    status, out, _ = call(capsys, str(pccopy), "--json")
    doc = json.loads(out)
    assert status == 1 and doc["chosen"]["step"] == 20
    assert doc["checkpoints"][0]["reason"] == "payload: chunk 0 checksum mismatch"


def test_step_of_corrupt_checkpoint(capsys, pccopy):
    flip(pccopy, ring_offset(pccopy, records(pccopy)[0]) + 30)
    status, out, _ = call(capsys, str(pccopy), "--json", "--step", "30")
    doc = json.loads(out)
    assert status == 1 and doc["chosen"] is None and doc["state"] is None
    status, _, err = call(capsys, str(pccopy), "--step", "999")
    assert status == 1 and "no valid checkpoint at step 999" in err


def test_nothing_valid_exit_2(capsys, pccopy):
    for r in records(pccopy):
        flip(pccopy, ring_offset(pccopy, r) + 30)
    status, out, _ = call(capsys, str(pccopy), "--json")
    doc = json.loads(out)
    check_schema(doc)
    assert status == 2 and doc["latest_valid_step"] is None and doc["chosen"] is None
    assert len(doc["checkpoints"]) == 3 and not any(c["valid"] for c in doc["checkpoints"])


def test_no_commit_yet_exit_2(capsys, tmp_path):
    ck = Checkpointer(tmp_path, max_async=1, keep=1, threads=1, chunk_size=CHUNK)
    ck.prepare(small_state(0))
    ck.close()
    status, out, _ = call(capsys, str(tmp_path), "--json")
    doc = json.loads(out)
    assert status == 2 and doc["checkpoints"] == [] and doc["message"] == "no committed checkpoint"


# -- exit status 3: not a checkpoint or unreadable ------------------------------------------------------
def expect_3(capsys: pytest.CaptureFixture, path: Path, words: str) -> None:
    status, out, err = call(capsys, str(path))
    assert status == 3, (out, err)
    assert out == "" and len(err.strip().splitlines()) == 1 and words in err and "Traceback" not in err
    status, out, err = call(capsys, str(path), "--json")
    doc = json.loads(out)
    check_schema(doc)
    assert status == 3 and doc["exit_status"] == 3 and words in doc["error"]


def test_missing_path(capsys, tmp_path):
    expect_3(capsys, tmp_path / "nope", "No such file or directory")


def test_empty_and_random_files(capsys, tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    expect_3(capsys, tmp_path / "empty", "not a checkpoint")
    (tmp_path / "random").write_bytes(os.urandom(100_000))
    expect_3(capsys, tmp_path / "random", "not a checkpoint")


def test_truncated_file(capsys, pccopy):
    os.truncate(pccopy, os.path.getsize(pccopy) - 1)
    expect_3(capsys, pccopy, "truncated")
    os.truncate(pccopy, 100)
    expect_3(capsys, pccopy, "not a usable pccheck file")


def test_superblock_bit_flip(capsys, pccopy):
    flip(pccopy, 20)
    expect_3(capsys, pccopy, "superblock checksum mismatch")


def test_directory_without_checkpoints(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "x.ckpt").write_bytes(b"not pccheck")
    expect_3(capsys, tmp_path, "no checkpoint in this directory")


def test_fifo_does_not_block(tmp_path):
    fifo = tmp_path / "pipe.ckpt"
    os.mkfifo(fifo)
    proc = run_cli(str(fifo), timeout=30)
    assert proc.returncode == 3 and "a fifo" in proc.stderr  # a blocking open would time out (an error)
    proc = run_cli(str(tmp_path), timeout=30)  # a fifo named *.ckpt inside a directory is not opened either
    assert proc.returncode == 3 and "no checkpoint" in proc.stderr


def test_device_file(capsys):
    expect_3(capsys, Path("/dev/null"), "a character device")


def test_unreadable_file_without_root_privilege(pcfile, tmp_path):
    """Tests run as root, who reads anything: drop the capabilities that bypass file permissions for
    this one case (skipped when impossible). Staying uid 0 keeps the environment readable wherever
    the clone lives."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop its file-permission capabilities")
    setpriv = shutil.which("setpriv")  # util-linux
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    target = tmp_path / "pccheck.ckpt"
    shutil.copyfile(pcfile, target)
    os.chmod(target, 0o000)
    caps = "-dac_override,-dac_read_search"
    proc = subprocess.run([setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", EXE, str(target)],
                          capture_output=True, text=True, timeout=60)
    if proc.stderr.startswith("setpriv:"):
        pytest.skip(f"cannot drop capabilities here: {proc.stderr.strip()}")
    assert proc.returncode == 3 and "Permission denied" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_unreadable_file_in_process(capsys, pcfile, monkeypatch):
    """The open failing with EACCES (emulated, since root can read anything) is one line and exit 3."""
    real_open = os.open

    def refuse(path: Any, *a: Any, **kw: Any) -> int:
        if str(path) == str(pcfile):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *a, **kw)

    monkeypatch.setattr(os, "open", refuse)
    expect_3(capsys, pcfile, "Permission denied")


class _Evil:
    ran = Path(tempfile.gettempdir()) / "pccheck-inspect-pwned"

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.ran}",))


def test_torchsave_with_pickled_code_never_runs(capsys, tmp_path):
    _Evil.ran.unlink(missing_ok=True)
    path = tmp_path / "ckpt-00000007.pt"
    torch.save({"step": 7, "evil": _Evil()}, path)
    status, out, err = call(capsys, str(path), "--json")
    doc = json.loads(out)
    assert status == 2 and not _Evil.ran.exists()
    assert "weights_only" in doc["checkpoints"][0]["reason"] and doc["state"] is None
    status, out, err = call(capsys, str(tmp_path), "--export", str(tmp_path / "x.safetensors"))
    assert status == 2 and not _Evil.ran.exists() and not (tmp_path / "x.safetensors").exists()


def test_legacy_pickle_file_is_not_unpickled(capsys, tmp_path):
    path = tmp_path / "old.pt"
    path.write_bytes(pickle.dumps(_Evil(), protocol=2))
    expect_3(capsys, path, "not a checkpoint")
    assert not _Evil.ran.exists()


# -- torchsave baseline --------------------------------------------------------------------------------
def test_torchsave_directory(capsys, tsdir):
    status, out, _ = call(capsys, str(tsdir), "--json", "--verify")
    doc = json.loads(out)
    check_schema(doc)
    assert status == 0 and doc["kind"] == "torchsave" and doc["latest_valid_step"] == 6
    assert [c["step"] for c in doc["checkpoints"]] == [6, 5] and doc["state"]["summary"]["step"] == 6


def test_torchsave_corrupt_newest(capsys, tsdir, tmp_path):
    d = tmp_path / "ts"
    shutil.copytree(tsdir, d)
    newest = d / "ckpt-00000006.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x40
    newest.write_bytes(bytes(data))
    status, out, _ = call(capsys, str(d), "--json", "--verify")
    doc = json.loads(out)
    assert status == 1 and doc["chosen"]["step"] == 5 and "checksum mismatch" in doc["checkpoints"][0]["reason"]
    newest.write_bytes(bytes(data[:100]))
    status, out, _ = call(capsys, str(d), "--json")
    assert status == 1 and json.loads(out)["chosen"]["step"] == 5


# -- export ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_export_round_trips_through_safetensors(capsys, tmp_path, dtype):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from pccheck import payload

    path = make_pccheck(tmp_path / "ck", [3, 4], dtype=dtype)
    out = tmp_path / "out.safetensors"
    status, stdout, _ = call(capsys, str(path), "--json", "--step", "3", "--export", str(out))
    doc = json.loads(stdout)
    assert status == 0 and doc["export"]["path"] == str(out) and doc["export"]["bytes"] == out.stat().st_size
    tensors = load_file(out)
    want = small_state(3, dtype)
    assert tensors["model/w"].dtype == dtype and torch.equal(tensors["model/w"], want["model"]["w"])
    assert torch.equal(tensors["model/b"], want["model"]["b"]) and torch.equal(tensors["rng/torch"], want["rng"]["torch"])
    assert len(tensors) == doc["state"]["tensor_count"] == doc["export"]["tensors"]
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["pccheck.step"] == "3" and meta["format"] == "pccheck.state.v1"
    tree = json.loads(meta["pccheck.state"])
    assert tree["data"] == {"position": 12, "seed": 0, "dataset": "tiny"} and tree["config"]["dtype"] == str(dtype)[6:]
    state = payload.decode(bytearray(out.read_bytes()))  # the export is a pccheck payload too
    assert state["step"] == 3 and state["special"]["tuple"] == (1, 2) and torch.equal(state["model"]["w"], want["model"]["w"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_export_torchsave(capsys, tmp_path, dtype):
    from safetensors.torch import load_file

    from pccheck.torchsave import TorchSaveCheckpointer

    TorchSaveCheckpointer(tmp_path / "ts").save(9, small_state(9, dtype))
    out = tmp_path / "out.safetensors"
    status, _, _ = call(capsys, str(tmp_path / "ts"), "--export", str(out))
    tensors = load_file(out)
    assert status == 0 and torch.equal(tensors["model/w"], small_state(9, dtype)["model"]["w"])
    assert tensors["model/w"].dtype == dtype


def test_export_of_corrupt_payload_falls_back(capsys, pccopy, tmp_path):
    newest = records(pccopy)[0]
    flip(pccopy, payload_offset(pccopy, newest) + newest["payload_len"] - 5)
    out = tmp_path / "out.safetensors"
    status, stdout, _ = call(capsys, str(pccopy), "--json", "--export", str(out))
    doc = json.loads(stdout)
    assert status == 1 and doc["chosen"]["step"] == 20 and "chunk" in doc["checkpoints"][0]["reason"]
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        assert f.metadata()["pccheck.step"] == "20"


# -- exit status 64: usage ---------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [[], ["--bogus", "x"], ["x", "--step", "-1"], ["x", "--step", "abc"],
                                  ["x", "--export", "/nonexistent-dir/out.safetensors"], ["a", "b"]])
def test_usage_errors_exit_64(capsys, argv):
    status, out, err = call(capsys, *argv)
    assert status == 64 and out == "" and len(err.strip().splitlines()) == 1 and "usage error" in err


def test_unknown_tensor_is_a_usage_error(capsys, pcfile):
    status, _, err = call(capsys, str(pcfile), "--tensor", "model/nope")
    assert status == 64 and "no tensor 'model/nope'" in err


def test_help_documents_exit_status(capsys):
    status, out, _ = call(capsys, "--help")
    assert status == 0
    for line in ("0   the chosen checkpoint is valid", "1   the newest checkpoint is corrupt", "2   nothing valid",
                 "3   not a checkpoint, or unreadable", "64  usage error"):
        assert line in out


def test_real_cli_exit_codes(pcfile, tmp_path):
    """The installed console script: statuses, one-line errors, no traceback."""
    assert run_cli(str(pcfile)).returncode == 0
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00" * 5000)
    for args, status in (([str(bad)], 3), (["--nope"], 64), ([str(pcfile), "--tensor", "zzz"], 64)):
        proc = run_cli(*args)
        assert proc.returncode == status and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# -- hostile strings and concurrency ------------------------------------------------------------------------
def test_hostile_names_are_escaped(capsys, tmp_path):
    """Tensor names with terminal escapes and rich markup print as inert text."""
    name = "\x1b[2J[bold red]evil[/]\n"
    with Checkpointer(tmp_path, max_async=1, keep=1, threads=1, chunk_size=CHUNK) as ck:
        ck.save(1, {name: torch.ones(2), "step": 1}).wait()
    status, out, _ = call(capsys, str(tmp_path))
    assert status == 0 and "\x1b" not in out and "[bold red]evil[/]" in out


def test_matches_payload_parse_header(pcfile):
    """The torch-free header check of the overview agrees with pccheck.payload.parse_header."""
    from pccheck import payload
    from pccheck.tools import inspect_layout as layout

    rec = records(pcfile)[0]
    buf = bytearray(rec["payload_len"])
    _core.read_payload(str(pcfile), rec["seq"], buf)
    (n,) = struct.unpack_from("<Q", buf)
    meta, mine = layout.tensor_entries(layout.parse_header_json(bytes(buf[8 : 8 + n])), len(buf), n)
    meta2, theirs = payload.parse_header(memoryview(buf))
    assert meta == meta2 and {(t.name, t.dtype, tuple(t.shape), t.nbytes) for t in mine} == {
        (i.name, i.dtype, tuple(i.shape), i.end - i.begin) for i in theirs}


def test_inspect_while_a_writer_runs(tmp_path):
    """Read-only and lock-free: inspecting a file that is being written (keep=1, saves back to back, so slots
    are reused all the time) gives a consistent answer: once a checkpoint is committed, every report says a
    valid one exists (exit 0), picks it, and never goes back to an older step."""
    stop, committed = threading.Event(), threading.Event()

    def writer() -> None:
        with Checkpointer(tmp_path, max_async=2, keep=1, threads=1, chunk_size=CHUNK) as ck:
            assert ck.save(1, small_state(1)).wait()
            committed.set()
            step = 1
            while not stop.is_set():
                step += 1
                ck.save(step, small_state(step))

    th = threading.Thread(target=writer)
    th.start()
    try:
        assert committed.wait(60)
        deadline = time.monotonic() + 2.0
        steps = []
        while time.monotonic() < deadline:
            doc = inspect(Options(str(tmp_path)))
            assert doc["exit_status"] == 0, doc["message"]
            assert doc["chosen"]["step"] == doc["latest_valid_step"] == doc["state"]["summary"]["step"]
            steps.append(doc["latest_valid_step"])
        assert len(steps) > 10 and steps == sorted(steps) and steps[-1] > steps[0], steps[:5] + steps[-5:]
    finally:
        stop.set()
        th.join()


# -- reads headers only; progress; a 1 GiB checkpoint --------------------------------------------------------
def _rchar() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def _big(directory: Path, nbytes: int, chunk: int) -> Path:
    state = {"step": 1, "model": {"w": torch.ones(nbytes // 4)}, "data": {"position": 3}}
    with Checkpointer(directory, max_async=1, keep=1, threads=2, chunk_size=chunk) as ck:
        assert ck.save(1, state).wait()
    return directory / "pccheck.ckpt"


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux /proc/self/io")
def test_overview_reads_headers_not_the_payload(tmp_path):
    path = _big(tmp_path, 64 << 20, 1 << 20)
    before = _rchar()
    doc = inspect(Options(str(path)))
    read = _rchar() - before
    assert doc["exit_status"] == 0 and doc["state"]["tensor_bytes"] == 64 << 20
    assert read < 2 << 20  # the ring, one table and the header's 1 MiB chunk
    before = _rchar()
    doc = inspect(Options(str(path), verify=True))
    assert doc["checkpoints"][0]["verified"] and _rchar() - before >= 64 << 20


def test_progress_bar_follows_the_verification(tmp_path, monkeypatch):
    from rich.console import Console

    path = _big(tmp_path, 8 << 20, 1 << 20)
    monkeypatch.setattr(cli, "_PROGRESS_MIN", 1)
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    doc = inspect(Options(str(path), verify=True, run=cli._progress_runner(console)))
    assert doc["checkpoints"][0]["verified"] and "verifying pccheck.ckpt" in console.file.getvalue()

    def boom() -> None:
        raise _core.CorruptError("x")

    with pytest.raises(_core.CorruptError):  # errors of the worker thread reach the caller
        cli._progress_runner(console)("x", 10, boom)


@pytest.mark.slow
def test_one_gib_overview_under_a_second_and_verify(tmp_path):
    path = _big(tmp_path, 1 << 30, 8 << 20)
    t0 = time.perf_counter()
    proc = run_cli(str(path))  # the whole command, interpreter start included
    overview = time.perf_counter() - t0
    assert proc.returncode == 0 and overview < 1.0, overview
    proc = run_cli(str(path), "--json", "--verify", timeout=300)
    v = json.loads(proc.stdout)["files"][0]["verify"]
    print(f"\n1 GiB: overview {overview:.2f} s, verify {v['bytes'] / v['seconds'] / 1e6:.0f} MB/s")
    assert proc.returncode == 0 and v["bytes"] >= 1 << 30


def test_files_of_other_writers_are_sets_of_their_own(capsys, tmp_path):
    """Two pccheck files in one directory are two sets, each with its own verdict: never one set whose
    steps count only when both hold them (the bug of judging every *.ckpt as one rank set)."""
    for rank in (0, 1):
        with Checkpointer(tmp_path, max_async=1, keep=2, threads=1, chunk_size=CHUNK, file_name=f"rank{rank}.ckpt") as ck:
            for step in (1, 2):
                assert ck.save(step + 10 * rank, small_state(step)).wait()
    status, out, _ = call(capsys, str(tmp_path), "--json")
    doc = json.loads(out)
    check_schema(doc)
    assert status == 0 and [s["label"] for s in doc["sets"]] == ["rank0.ckpt", "rank1.ckpt"]
    assert [s["exit_status"] for s in doc["sets"]] == [0, 0] and doc["chosen"]["step"] == 12  # the newest
    rank1 = tmp_path / "rank1.ckpt"
    flip(rank1, ring_offset(rank1, records(rank1)[0]) + 30)
    status, out, _ = call(capsys, str(tmp_path), "--json")
    doc = json.loads(out)
    assert [s["exit_status"] for s in doc["sets"]] == [0, 1]
    assert doc["chosen"]["step"] == 11 and doc["chosen"]["set"] == "rank1.ckpt" and status == 1
    status, out, _ = call(capsys, str(tmp_path), "--tensor", "model/w", "--json")
    assert status == 1 and json.loads(out)["tensor"]["count"] == 64 * 48
    status, out, _ = call(capsys, str(tmp_path))  # the human view shows each set's verdict
    assert status == 1 and "rank0.ckpt: step 2 (seq 2) is valid" in out.replace("\n", " ")


def _crafted(path: Path, header: dict[str, Any], data: bytes) -> None:
    """A payload with an arbitrary header written through the real core: every checksum is valid."""
    raw = json.dumps(header).encode()
    blob = struct.pack("<Q", len(raw)) + raw + data
    store = _core.Store(str(path), slot_size=1 << 18, max_async=1, keep=1, chunk_size=BLOCK, threads=1, memory_budget=1 << 18)
    try:
        seq = store.begin(7, len(blob), True)
        store.write_host(seq, blob, [])
        assert store.wait(seq, None) == "committed"
    finally:
        store.close()


def _meta(tree: str) -> dict[str, Any]:
    return {"format": "pccheck.state.v1", "pccheck.state": tree}


@pytest.mark.parametrize("header, data, overview_ok", [
    ({"__metadata__": _meta("[" * 50_000 + "]" * 50_000)}, b"", False),
    ({"__metadata__": _meta('{"x": {"__tensor__": "gone"}}')}, b"", False),
    ({"__metadata__": {"format": "other"}}, b"", False),
    ({"__metadata__": _meta("{}"), "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12), False),
    ({"__metadata__": _meta('{"x": {"__dtype__": "nonexistent"}}')}, b"", True),
    ({"__metadata__": _meta('{"x": {"__dtype__": "load"}}')}, b"", True),
    ({"__metadata__": _meta('{"x": {"__device__": "no-such-device"}}')}, b"", True),
    ({"__metadata__": _meta('{"x": {"__dict__": [[[1], 2]]}}')}, b"", True),
])
def test_crafted_payloads_with_valid_checksums(capsys, tmp_path, header, data, overview_ok):
    """Hostile payloads that pass every CRC: a clear reason, exit 2 (nothing else valid), no traceback."""
    path = tmp_path / "pccheck.ckpt"
    _crafted(path, header, data)
    status, out, err = call(capsys, str(path), "--json")
    doc = json.loads(out)
    assert status == (0 if overview_ok else 2) and (doc["state"] is not None) == overview_ok
    status, out, err = call(capsys, str(path), "--json", "--export", str(tmp_path / "o.safetensors"))
    doc = json.loads(out)
    assert status == 2 and doc["checkpoints"][0]["reason"].startswith("payload: ") and doc["export"] is None
    assert not (tmp_path / "o.safetensors").exists() and len(err.strip().splitlines()) == 1
