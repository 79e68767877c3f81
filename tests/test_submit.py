"""pccheck-submit's command line (fast: nothing is trained)."""
from __future__ import annotations

import json
import shlex
import sys

import pytest

from pccheck.launcher import cli as submod
from pccheck.launcher import follow as followmod
from pccheck.launcher.cycle import cycle_breakdown
from pccheck.launcher.rundir import RunDir, tail_lines


def run_main(args, monkeypatch, tmp_path, controller=(False, "no controller (test)")):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(submod.slurm, "controller_answers", lambda timeout=10.0: controller)
    return submod.main(args)


def dry_run(args, monkeypatch, tmp_path, capsys) -> dict[str, str]:
    assert run_main(["--dry-run", *args], monkeypatch, tmp_path) == 0
    out = capsys.readouterr()
    return dict(line.split(": ", 1) for line in out.out.splitlines() if ": " in line) | {"stderr": out.err}


def test_dry_run_of_the_default_command(monkeypatch, tmp_path, capsys):
    got = dry_run(["--steps", "151", "--freq", "50", "--seed", "3", "--checkpointer", "torchsave"], monkeypatch, tmp_path, capsys)
    assert "executor: local" in got["stderr"] and "no controller (test)" in got["stderr"]
    cmd = shlex.split(got["command"])
    assert cmd[:3] == [sys.executable, "-m", "pccheck.demo"]
    assert cmd[cmd.index("--training-steps") + 1] == "151" and cmd[cmd.index("--checkpoint-freq") + 1] == "50"
    assert cmd[cmd.index("--seed") + 1] == "3" and "--load-checkpoint" in cmd
    assert cmd[cmd.index("--loss-file") + 1] == f"{tmp_path}/runs/pccheck/loss.csv"
    assert got["checkpoint dir"] == f"{tmp_path}/runs/pccheck/checkpoints"


def test_dry_run_of_a_command_keeps_its_args(monkeypatch, tmp_path, capsys):
    (tmp_path / "train.py").write_text("")
    args = ["--lr", "1e-3", "a b", "it's", '"quoted"', ""]
    got = dry_run(["--checkpoint-dir", "ck", "--stop-signal", "USR1", "--", "python3", "train.py", *args],
                  monkeypatch, tmp_path, capsys)
    assert shlex.split(got["command"]) == ["python3", "train.py", *args]
    assert got["checkpoint dir"] == f"{tmp_path}/ck" and "stop signal SIGUSR1" in got["time limit"]


@pytest.mark.parametrize("command, message", [
    (["no-such-program-xyz"], "command not found on PATH: no-such-program-xyz"),
    (["./missing.sh"], "command not found: ./missing.sh"),
    (["python3", "missing.py", "--x"], "script not found: missing.py"),
])
def test_a_command_that_does_not_exist_is_refused_before_submission(monkeypatch, tmp_path, capsys, command, message):
    rc = run_main(["--executor", "local", "--", *command], monkeypatch, tmp_path)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and message in err and "nothing submitted" in err
    assert not (tmp_path / "runs").exists()


def test_shortcuts_and_command_do_not_mix(monkeypatch, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_main(["--steps", "5", "--", "python3", "-c", "pass"], monkeypatch, tmp_path)
    assert exc.value.code == 2 and "--steps/--freq are pccheck-train flags" in capsys.readouterr().err


def test_slurm_executor_without_controller_is_a_usage_error(monkeypatch, tmp_path, capsys):
    rc = run_main(["--executor", "slurm", "--steps", "5"], monkeypatch, tmp_path)
    assert rc == 2 and "--executor slurm, but no controller" in capsys.readouterr().err


def test_bad_trainer_flag_is_reported_before_submission(monkeypatch, tmp_path, capsys):
    rc = run_main(["--steps", "5", "--model-dtype", "fp64"], monkeypatch, tmp_path)
    err = capsys.readouterr().err
    assert rc == 2 and "model-dtype" in err
    assert not (tmp_path / "runs").exists()


def test_stray_argument(monkeypatch, tmp_path):
    with pytest.raises(SystemExit) as exc:
        run_main(["train.py"], monkeypatch, tmp_path)
    assert exc.value.code == 2


def test_short_time_clamps_signal_lead(monkeypatch, tmp_path, capsys):
    got = dry_run(["--time", "1", "--signal-lead", "90", "--checkpointer", "torchsave"], monkeypatch, tmp_path, capsys)
    assert "signal lead 15 s" in got["time limit"] and "too close" in got["stderr"]


def test_refuses_a_second_submission_while_active(monkeypatch, tmp_path, capsys):
    rd = RunDir(tmp_path / "runs" / "pccheck").create()
    rd.write_submission({"submission": "s1", "executor": "slurm", "job_id": "42"})
    monkeypatch.setattr(submod.slurm, "job_state", lambda jid: ("RUNNING", 0, ""))
    rc = run_main(["--steps", "5", "--checkpointer", "torchsave"], monkeypatch, tmp_path)
    assert rc == 2 and "still active as Slurm job 42" in capsys.readouterr().err


def test_fresh_moves_old_state_aside(monkeypatch, tmp_path, capsys):
    rd = RunDir(tmp_path / "runs" / "pccheck").create()
    (rd.path / "checkpoints").mkdir()
    (rd.path / "loss.csv").write_text("step,loss\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(submod.slurm, "controller_answers", lambda timeout=10.0: (True, ""))
    submitted = {}
    monkeypatch.setattr(submod, "submit", lambda *a: submitted.setdefault("job", type("J", (), {"job_id": "1"})()))
    rc = submod.main(["--fresh", "--steps", "5", "--checkpointer", "torchsave", "--executor", "slurm"])
    assert rc == 0 and submitted
    assert not (rd.path / "checkpoints").exists() and not (rd.path / "loss.csv").exists()
    assert any(p.name.startswith("checkpoints.old-") for p in rd.path.iterdir())
    assert json.loads(rd.submission_file.read_text())["job_id"] == "1"


def test_cycle_breakdown_parts():
    ev = [
        {"event": "stop", "kind": "timeout", "trigger": "deadline", "signal_at": None, "stop_at": 100.0, "stopped_at": 101.0},
        {"event": "requeue", "requeued_at": 101.5},
        {"event": "start", "run": 1, "process_start": 113.0, "fn_start": 114.0},
        {"event": "first_step", "run": 1, "time": 117.0},
    ]
    (d,) = cycle_breakdown(ev)
    assert d["checkpoint_durable"] == 1.0 and d["requeue_command"] == 0.5 and d["requeue_to_new_process"] == 11.5
    assert d["wrapper_to_first_step"] == 3.0 and d["total"] == 17.0


def test_tail_lines_folds_carriage_returns(tmp_path):
    p = tmp_path / "log"
    p.write_text("a\nprogress 1\rprogress 2\nb\n")
    assert tail_lines(p, 2) == ["progress 2", "b"]


def test_live_view_renders(tmp_path):
    from rich.console import Console

    rd = RunDir(tmp_path / "run").create()
    rd.status_file.write_text(json.dumps({"step": 7, "total_steps": 151, "last_committed_step": 5,
                                          "state": "running", "step_seconds": 0.1, "checkpoint_seconds": 0.2}))
    rd.append_event("start", submission="s", job_id="9", run=0, committed_before=None)
    (rd.submitit_dir / "9_0_log.out").write_text("hello\nworld\n")
    view = followmod._View(rd, "s", "local", "9", None)
    view.poll()
    console = Console(record=True, width=120, force_terminal=True)
    console.print(view.render())
    text = console.export_text()
    assert "7/151" in text and "committed" in text and "world" in text and "start #0" in text
