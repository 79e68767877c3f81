"""The job wrapper (pccheck.launcher.wrapper) with real commands and real signals, no Slurm: the contract's
environment, one stop request per start, the deadline, the hard limit, requeue decisions and records.
The Slurm side (scontrol requeue, step-wide signals) is tested on the local Slurm in tests/slurm/."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pccheck.launcher import proctree, wrapper
from pccheck.launcher.rundir import RunDir
from pccheck.launcher.wrapper import JobSpec, run_job

from pccheck import contract

FAKE = str(Path(__file__).with_name("fake_command.py"))
ENV_VARS = ["SLURM_JOB_ID", "SLURM_PROCID", "SLURM_RESTART_COUNT", "SLURM_JOB_END_TIME", "SUBMITIT_EXECUTOR",
            "SUBMITIT_LOCAL_JOB_ID", "SUBMITIT_LOCAL_GLOBALID", *(v for v in vars(contract).values()
                                                                    if isinstance(v, str) and v.startswith("PCCHECK_"))]


@pytest.fixture(autouse=True)
def clean(monkeypatch) -> None:
    """No Slurm/submitit/pccheck variables from the environment the tests run in."""
    for v in ENV_VARS:
        monkeypatch.delenv(v, raising=False)


@pytest.fixture
def local(monkeypatch) -> None:
    """As under submitit's local executor (a restart is exit 144), the wrapper's process starting now (its
    emulated time limit counts from the process start; here the wrapper runs inside pytest)."""
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "123")
    monkeypatch.setattr(wrapper, "_process_start_time", time.time)


def spec(tmp_path: Path, *args: str, **kw: Any) -> JobSpec:
    base: dict[str, Any] = dict(name="t", run_dir=str(tmp_path / "run"), submission="sub1",
                                command=[sys.executable, FAKE, *args], cwd=str(tmp_path),
                                checkpoint_dir=str(tmp_path / "ck"), max_requeues=2, max_preemptions=2,
                                signal_lead_s=5.0)
    base.update(kw)
    return JobSpec(**base)


def events(tmp_path: Path, kind: str = None) -> list[dict]:
    return [e for e in RunDir(tmp_path / "run").events() if kind is None or e["event"] == kind]


def run(s: JobSpec) -> tuple[Any, int]:
    """run_job(s): (its return value or None, the exit code it ended with)."""
    try:
        return run_job(s), 0
    except SystemExit as exc:
        return None, int(exc.code or 0)


def when_training(tmp_path: Path, action, min_step: int = 3) -> threading.Thread:
    """Runs `action()` once the command reports step >= min_step (in a thread; the wrapper runs in the main one)."""
    status = tmp_path / "run" / "status.json"

    def go() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                st = json.loads(status.read_text())
                if st.get("state") == "running" and st.get("step", 0) >= min_step:
                    action()
                    return
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            time.sleep(0.02)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def test_completed_with_the_contract_environment_and_args_unchanged(tmp_path):
    odd = ["a b", "it's", '"q"', "$HOME", ""]
    s = spec(tmp_path, "--steps", "5", "--save-every", "5", "--env-out", str(tmp_path / "env.json"), "--", *odd)
    out, code = run(s)
    assert code == 0 and out["status"] == "completed" and out["last_committed_step"] == 5
    seen = json.loads((tmp_path / "env.json").read_text())
    assert seen["argv"][-len(odd):] == odd
    env = seen["env"]
    assert env[contract.RUN_DIR] == str(tmp_path / "run") and env[contract.CHECKPOINT_DIR] == str(tmp_path / "ck")
    assert env[contract.RESTART] == "0" and env[contract.STOP_SIGNAL] == "SIGUSR2"
    assert env[contract.STATUS_FILE] == str(tmp_path / "run" / "status.json") and contract.END_TIME not in env
    final = events(tmp_path, "final")[-1]
    assert final["outcome"] == "completed" and "at step 5" in final["reason"]
    # decided: a late warning signal while submitit finishes must not kill the job
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN and signal.getsignal(signal.SIGTERM) == signal.SIG_IGN


def test_stop_request_reaches_the_command_exactly_once_and_the_job_restarts(tmp_path, local):
    log = tmp_path / "signals.log"
    # the command takes 1 s to stop without saying so in its status: the wrapper's polls meanwhile send nothing
    s = spec(tmp_path, "--steps", "100000", "--signal-log", str(log), "--stop-seconds", "1")

    def flood() -> None:  # the warning signal twice and a SIGTERM: one stop request
        for sig in (signal.SIGUSR2, signal.SIGUSR2, signal.SIGTERM):
            os.kill(os.getpid(), sig)
            time.sleep(0.05)

    when_training(tmp_path, flood)
    _, code = run(s)
    assert code == wrapper.LOCAL_REQUEUE_RETURN_CODE
    assert log.read_text().split() == ["SIGUSR2"]
    stop = events(tmp_path, "stop")[-1]
    assert stop["signal"] == "SIGUSR2" and stop["delivered"].startswith("SIGUSR2 to pid")
    assert stop["last_committed_step"] == stop["step"] and stop["last_committed_step"] > 0
    req = events(tmp_path, "requeue")[-1]
    assert req["how"] == "local restart" and req["kind"] == "timeout"  # USR2 without a known end time
    # the next start is restart 1 and resumes: the environment says so
    s2 = spec(tmp_path, "--steps", "3", "--env-out", str(tmp_path / "env.json"))
    run(s2)
    assert json.loads((tmp_path / "env.json").read_text())["env"][contract.RESTART] == "1"


def test_a_request_before_the_command_handles_it_is_delivered_once_it_does(tmp_path, local):
    log = tmp_path / "signals.log"
    s = spec(tmp_path, "--steps", "100000", "--handler-delay", "1.5", "--signal-log", str(log))
    threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGUSR2)).start()
    _, code = run(s)
    assert code == wrapper.LOCAL_REQUEUE_RETURN_CODE and log.read_text().split() == ["SIGUSR2"]
    assert events(tmp_path, "stop")[-1]["delivered"].startswith("SIGUSR2 to pid")


def test_configured_stop_signal(tmp_path, local):
    log = tmp_path / "signals.log"
    s = spec(tmp_path, "--steps", "100000", "--signal-log", str(log), stop_signal="SIGUSR1")
    when_training(tmp_path, lambda: os.kill(os.getpid(), signal.SIGTERM))
    _, code = run(s)
    assert code == wrapper.LOCAL_REQUEUE_RETURN_CODE and log.read_text().split() == ["SIGUSR1"]


def test_deadline_stops_the_command_before_the_time_limit(tmp_path, local):
    """Under the local executor the limit is emulated: the wrapper's own deadline check sends the request."""
    s = spec(tmp_path, "--steps", "100000", "--no-status", time_limit_s=6.0, deadline_margin_s=4.0)
    _, code = run(s)
    assert code == wrapper.LOCAL_REQUEUE_RETURN_CODE
    stop = events(tmp_path, "stop")[-1]
    assert stop["trigger"] == "deadline" and stop["kind"] == "timeout" and stop["end_time"] - stop["requested_at"] > 1


def test_the_command_gets_the_end_time_and_no_end_time_without_deadline(tmp_path, local):
    run(spec(tmp_path, "--steps", "1", "--env-out", str(tmp_path / "a.json"), time_limit_s=600.0))
    end = float(json.loads((tmp_path / "a.json").read_text())["env"][contract.END_TIME])
    assert 590 < end - time.time() < 600
    run(spec(tmp_path, "--steps", "1", "--env-out", str(tmp_path / "b.json"), deadline=False, submission="sub2"))
    assert json.loads((tmp_path / "b.json").read_text())["env"][contract.END_TIME] == contract.NO_END_TIME


def test_a_command_that_ignores_the_request_is_killed_with_its_whole_tree(tmp_path, local, caplog):
    s = spec(tmp_path, "--steps", "100000", "--ignore-stop", "--child-in-own-session", "--save-every", "2",
             signal_lead_s=1.5)
    when_training(tmp_path, lambda: os.kill(os.getpid(), signal.SIGUSR2), min_step=5)
    t0 = time.monotonic()
    _, code = run(s)
    assert time.monotonic() - t0 < 20
    assert not proctree.descendants(os.getpid())  # the grandchild in its own session is gone too
    assert "did not stop within 2 s of the request; last committed step" in caplog.text
    stop = events(tmp_path, "stop")[-1]
    assert stop["killed_at_limit"] and stop["delivered"] == "not sent: no process of the command handles SIGUSR2"
    assert code == wrapper.LOCAL_REQUEUE_RETURN_CODE  # it committed progress, which stays: requeued


def test_a_crash_at_start_fails_once_and_is_not_requeued(tmp_path, local):
    with pytest.raises(wrapper._JobFinished, match="exit 3"):
        run_job(spec(tmp_path, "--exit-at-start", "3"))
    assert not events(tmp_path, "requeue") and events(tmp_path, "final")[-1]["outcome"] == "failed"


def test_a_user_error_is_not_requeued(tmp_path, local):
    with pytest.raises(wrapper._JobFinished, match="user error"):
        run_job(spec(tmp_path, "--exit-at-start", "2"))


def test_stop_without_progress_is_not_requeued(tmp_path, local):
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "ckpt-00999999.pt").write_bytes(_zip())  # newer than anything this start commits
    when_training(tmp_path, lambda: os.kill(os.getpid(), signal.SIGUSR2))
    _, code = run(spec(tmp_path, "--steps", "100000"))
    assert code == contract.EXIT_REQUEUE and not events(tmp_path, "requeue")
    assert "no progress" in events(tmp_path, "final")[-1]["reason"]


def test_torchrun_style_exit_1_after_a_reported_stop_is_a_stop(tmp_path, local):
    s = spec(tmp_path, "--steps", "100000", "--exit-after-stop", "1")
    when_training(tmp_path, lambda: os.kill(os.getpid(), signal.SIGUSR2))
    _, code = run(s)
    assert code == wrapper.LOCAL_REQUEUE_RETURN_CODE


def test_budget_spent_stops_for_good(tmp_path, local):
    rd = RunDir(tmp_path / "run").create()
    for n in range(2):  # two timeout requeues used: the budget (max_requeues=2)
        rd.append_event("start", submission="sub1", run=n, committed_before=n)
        rd.append_event("requeue", submission="sub1", kind="timeout")
    when_training(tmp_path, lambda: os.kill(os.getpid(), signal.SIGUSR2))
    _, code = run(spec(tmp_path, "--steps", "100000"))
    final = events(tmp_path, "final")[-1]
    assert code == contract.EXIT_REQUEUE and "requeue budget spent" in final["reason"] and "--max-requeues 2" in final["reason"]


def test_start_guard_stops_a_loop_without_progress(tmp_path, local):
    rd = RunDir(tmp_path / "run").create()
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "ckpt-00000050.pt").write_bytes(_zip())
    for n in range(2):
        rd.append_event("start", submission="sub1", run=n, committed_before=50)
    _, code = run(spec(tmp_path, "--exit-at-start", "0", "--env-out", str(tmp_path / "ran.json")))
    assert code == contract.EXIT_REQUEUE and not (tmp_path / "ran.json").exists()
    assert "no progress: the last 2 starts" in events(tmp_path, "final")[-1]["reason"]


def test_finished_submission_is_not_run_again(tmp_path):
    rd = RunDir(tmp_path / "run").create()
    rd.append_event("final", submission="sub1", outcome="completed", exit_code=0, reason="done")
    _, code = run(spec(tmp_path, "--env-out", str(tmp_path / "ran.json")))
    assert code == 0 and not (tmp_path / "ran.json").exists()


def _zip() -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x", "1")
    return buf.getvalue()


def test_a_second_job_on_the_same_run_directory_is_refused_and_names_the_first(tmp_path, local, monkeypatch):
    """Two jobs on one run directory (e.g. two sbatch of the same name): the second waits for the run
    directory's lock, then refuses with the holder's host, pid and start time, and writes no record."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pccheck import _core as c\n"
                               f"lock = c.FileLock({str(run_dir / wrapper.RUN_LOCK)!r}, 'x')\n"
                               "print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(wrapper, "RUN_LOCK_WAIT_S", 0.5)
        with pytest.raises(wrapper._JobFinished,
                           match=rf"in use by another process \(host {socket.gethostname()}, pid {holder.pid}, started 20"):
            run_job(spec(tmp_path, "--env-out", str(tmp_path / "ran.json")))
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "ran.json").exists() and events(tmp_path) == []
    run(spec(tmp_path, "--steps", "1"))  # free again once the holder is gone
    assert events(tmp_path, "final")[-1]["outcome"] == "completed"
