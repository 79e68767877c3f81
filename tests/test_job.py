"""pccheck.jobs.job (what runs inside the job), with a fake trainer: requeue decisions, budgets,
timeout vs preemption, the no-progress guard. No Slurm needed."""
from __future__ import annotations

import signal

import pytest

from pccheck import train
from pccheck.jobs import job as jobmod
from pccheck.jobs.job import JobSpec, run_job
from pccheck.jobs.rundir import RunDir
from pccheck.train import RunResult

ENV_VARS = ["SLURM_JOB_ID", "SLURM_PROCID", "SLURM_RESTART_COUNT", "SUBMITIT_EXECUTOR", "SUBMITIT_LOCAL_JOB_ID",
            "SUBMITIT_LOCAL_GLOBALID", "PCCHECK_JOB_END_TIME", "SLURM_JOB_END_TIME"]


@pytest.fixture(autouse=True)
def clean(monkeypatch) -> None:
    """No Slurm/submitit variables from the environment the tests run in (conftest restores signal handlers)."""
    for v in ENV_VARS:
        monkeypatch.delenv(v, raising=False)


def spec(tmp_path, **kw) -> JobSpec:
    base = dict(name="t", run_dir=str(tmp_path / "run"), submission="sub1",
                trainer_argv=["--checkpoint-dir", str(tmp_path / "ck")], max_requeues=2, max_preemptions=2)
    base.update(kw)
    return JobSpec(**base)


def fake_trainer(monkeypatch, result: RunResult, signum=None, committed_status=None):
    def run(argv, stop=None):
        if signum is not None:
            signal.raise_signal(signum)
        reason = stop.check(0.1, 0.1) if stop is not None else None
        if result.status == "stopped":
            assert reason is not None or signum is None
        return result

    monkeypatch.setattr(train, "run", run)


def events(tmp_path, kind=None):
    ev = RunDir(tmp_path / "run").events()
    return [e for e in ev if kind is None or e["event"] == kind]


def test_completed(tmp_path, monkeypatch):
    fake_trainer(monkeypatch, RunResult("completed", 10, "", 10, None))
    out = run_job(spec(tmp_path))
    assert out["status"] == "completed"
    # decided: a late USR2/TERM while submitit finishes must not kill the job (finalization resets handlers)
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN and signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    final = events(tmp_path, "final")[-1]
    assert final["outcome"] == "completed" and final["exit_code"] == 0


def test_local_stop_exits_with_submitit_requeue_code(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "123")
    fake_trainer(monkeypatch, RunResult("stopped", 5, "received SIGUSR2", 5, None), signum=signal.SIGUSR2)
    with pytest.raises(SystemExit) as exc:
        run_job(spec(tmp_path))
    assert exc.value.code == jobmod.LOCAL_REQUEUE_RETURN_CODE
    req = events(tmp_path, "requeue")[-1]
    assert req["how"] == "local restart" and req["kind"] == "timeout"  # USR2 without an end time


def test_slurm_requeue_and_preemption_kind(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("PCCHECK_JOB_END_TIME", str(__import__("time").time() + 3600))
    calls = []
    monkeypatch.setattr(jobmod.slurm, "requeue", lambda jid: (calls.append(jid) or True, "scontrol requeue"))
    fake_trainer(monkeypatch, RunResult("stopped", 5, "received SIGTERM", 5, None), signum=signal.SIGTERM)
    with pytest.raises(SystemExit) as exc:
        run_job(spec(tmp_path))
    assert exc.value.code == jobmod.EXIT_REQUEUE and calls == ["77"]
    stop = events(tmp_path, "stop")[-1]
    assert stop["kind"] == "preemption" and stop["signal"] == "SIGTERM"


def test_signal_near_end_time_is_a_timeout(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("PCCHECK_JOB_END_TIME", str(__import__("time").time() + 100))
    monkeypatch.setattr(jobmod.slurm, "requeue", lambda jid: (True, "scontrol requeue"))
    fake_trainer(monkeypatch, RunResult("stopped", 5, "received SIGUSR2", 5, None), signum=signal.SIGUSR2)
    with pytest.raises(SystemExit):
        run_job(spec(tmp_path, signal_lead_s=30, deadline=False))
    assert events(tmp_path, "stop")[-1]["kind"] == "timeout"


def test_already_requeued_by_slurm_is_fine(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setattr(jobmod.slurm, "requeue", lambda jid: (False, "`scontrol requeue 77` refused: Job is pending execution"))
    monkeypatch.setattr(jobmod.slurm, "job_state", lambda jid: ("RUNNING", 0, ""))
    monkeypatch.setattr(jobmod.slurm, "resubmit_dependent", lambda *a: pytest.fail("must not resubmit"))
    fake_trainer(monkeypatch, RunResult("stopped", 5, "received SIGTERM", 5, None), signum=signal.SIGTERM)
    with pytest.raises(SystemExit):
        run_job(spec(tmp_path))
    assert "requeued by Slurm itself" in events(tmp_path, "requeue")[-1]["how"]


def test_refused_requeue_without_sbatch_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setattr(jobmod.slurm, "requeue", lambda jid: (False, "scontrol is not on PATH inside the job"))
    monkeypatch.setattr(jobmod.slurm, "job_state", lambda jid: ("RUNNING", 0, ""))
    monkeypatch.setattr(jobmod.slurm, "resubmit_dependent", lambda *a: (None, "sbatch is not on PATH either"))
    fake_trainer(monkeypatch, RunResult("stopped", 5, "received SIGTERM", 5, None), signum=signal.SIGTERM)
    with pytest.raises(SystemExit) as exc:
        run_job(spec(tmp_path))
    assert exc.value.code == jobmod.EXIT_REQUEUE
    final = events(tmp_path, "final")[-1]
    assert "cannot requeue" in final["reason"] and "sbatch is not on PATH" in final["reason"]


def test_budgets_are_separate(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setattr(jobmod.slurm, "requeue", lambda jid: (True, "scontrol requeue"))
    rd = RunDir(tmp_path / "run").create()
    for n in range(2):  # two timeout requeues already used (the budget), none for preemption
        rd.append_event("start", submission="sub1", run=n, committed_before=n * 5 or None)
        rd.append_event("requeue", submission="sub1", kind="timeout")
    monkeypatch.setenv("PCCHECK_JOB_END_TIME", str(__import__("time").time() + 3600))
    fake_trainer(monkeypatch, RunResult("stopped", 15, "received SIGTERM", 15, 10), signum=signal.SIGTERM)
    with pytest.raises(SystemExit) as exc:  # a preemption still has budget
        run_job(spec(tmp_path))
    assert exc.value.code == jobmod.EXIT_REQUEUE and events(tmp_path, "requeue")[-1]["kind"] == "preemption"
    # a timeout has none left
    rd.append_event("start", submission="sub1", run=3, committed_before=15)
    monkeypatch.setenv("PCCHECK_JOB_END_TIME", str(__import__("time").time() + 10))
    fake_trainer(monkeypatch, RunResult("stopped", 20, "received SIGUSR2", 20, 15), signum=signal.SIGUSR2)
    with pytest.raises(SystemExit) as exc:
        run_job(spec(tmp_path))
    final = events(tmp_path, "final")[-1]
    assert exc.value.code == jobmod.EXIT_REQUEUE and "requeue budget spent" in final["reason"] and "--max-requeues 2" in final["reason"]


def test_stop_without_progress_is_not_requeued(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setattr(jobmod.slurm, "requeue", lambda jid: pytest.fail("must not requeue"))
    fake_trainer(monkeypatch, RunResult("stopped", 10, "received SIGTERM", 10, 10), signum=signal.SIGTERM)
    with pytest.raises(SystemExit) as exc:
        run_job(spec(tmp_path))
    assert exc.value.code == jobmod.EXIT_REQUEUE
    assert "no progress" in events(tmp_path, "final")[-1]["reason"]


def test_start_guard_stops_a_loop_without_progress(tmp_path, monkeypatch):
    rd = RunDir(tmp_path / "run").create()
    (rd.status_file).write_text('{"last_committed_step": 50}')
    for n in range(2):
        rd.append_event("start", submission="sub1", run=n, committed_before=50)
    monkeypatch.setattr(train, "run", lambda *a, **k: pytest.fail("must not train"))
    with pytest.raises(SystemExit) as exc:
        run_job(spec(tmp_path))
    assert exc.value.code == jobmod.EXIT_REQUEUE
    assert "no progress: the last 2 starts" in events(tmp_path, "final")[-1]["reason"]


def test_crash_is_final_and_not_requeued(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setattr(jobmod.slurm, "requeue", lambda jid: pytest.fail("must not requeue"))

    def boom(argv, stop=None):
        raise RuntimeError("kaputt")

    monkeypatch.setattr(train, "run", boom)
    with pytest.raises(jobmod._JobFinished):
        run_job(spec(tmp_path))
    final = events(tmp_path, "final")[-1]
    assert final["outcome"] == "failed" and "kaputt" in final["reason"]


def test_finished_submission_is_not_run_again(tmp_path, monkeypatch):
    rd = RunDir(tmp_path / "run").create()
    rd.append_event("final", submission="sub1", outcome="completed", exit_code=0, reason="done")
    monkeypatch.setattr(train, "run", lambda *a, **k: pytest.fail("must not train"))
    with pytest.raises(SystemExit) as exc:
        run_job(spec(tmp_path))
    assert exc.value.code == 0
