"""A training command for the job wrapper's tests, without torch (it starts in ~50 ms).

It "trains" by sleeping, commits torch.save-style checkpoints (`ckpt-<step>.pt`, complete zip files: what
pccheck's catalog counts as committed) into $PCCHECK_CHECKPOINT_DIR, reports to $PCCHECK_STATUS_FILE like
the loop helpers do, and follows the contract: on the stop signal or SIGTERM it checkpoints at the step
boundary and exits 75. Every signal it receives is appended to --signal-log; its argv and PCCHECK_*
environment go to --env-out.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import zipfile

received: list[str] = []


def on_signal(signum: int, frame: object) -> None:
    received.append(signal.Signals(signum).name)
    if args.signal_log:
        with open(args.signal_log, "a") as f:
            f.write(signal.Signals(signum).name + "\n")


def commit(step: int) -> None:
    d = os.environ["PCCHECK_CHECKPOINT_DIR"]
    tmp = os.path.join(d, f".tmp-{step}")
    with zipfile.ZipFile(tmp, "w") as z:
        z.writestr("step", str(step))
    os.replace(tmp, os.path.join(d, f"ckpt-{step:08d}.pt"))


def report(state: str, step: int, committed: "int | None") -> None:
    path = os.environ.get("PCCHECK_STATUS_FILE")
    if path and args.status:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"state": state, "step": step, "last_committed_step": committed, "step_seconds": args.step_seconds,
                       "checkpoint_seconds": 0.01, "time": time.time(), "pid": os.getpid()}, f)
        os.replace(tmp, path)


p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=100)
p.add_argument("--step-seconds", type=float, default=0.02)
p.add_argument("--save-every", type=int, default=10)
p.add_argument("--start", type=int, default=0, help="the step to resume from")
p.add_argument("--ignore-stop", action="store_true", help="install no handler: the stop request is ignored")
p.add_argument("--exit-at-start", type=int, default=None, help="exit with this code before training")
p.add_argument("--exit-after-stop", type=int, default=75, help="exit code after a stop (torchrun exits 1)")
p.add_argument("--no-status", dest="status", action="store_false")
p.add_argument("--handler-delay", type=float, default=0.0, help="seconds before the handlers are installed")
p.add_argument("--signal-log", default=None)
p.add_argument("--stop-seconds", type=float, default=0.0)
p.add_argument("--env-out", default=None)
p.add_argument("--child-in-own-session", action="store_true", help="start a sleeping grandchild with setsid")
args, extra = p.parse_known_args()

if args.env_out:
    with open(args.env_out, "w") as f:
        json.dump({"argv": sys.argv[1:], "env": {k: v for k, v in os.environ.items() if k.startswith("PCCHECK_")}}, f)
if args.exit_at_start is not None:
    sys.exit(args.exit_at_start)
time.sleep(args.handler_delay)
if not args.ignore_stop:
    for sig in {signal.Signals[os.environ.get("PCCHECK_STOP_SIGNAL", "SIGUSR2")], signal.SIGTERM}:
        signal.signal(sig, on_signal)
if args.child_in_own_session:
    import subprocess

    subprocess.Popen(["sleep", "300"], start_new_session=True)
committed = args.start or None
step = args.start
report("running", step, committed)
while step < args.steps:
    time.sleep(args.step_seconds)
    step += 1
    if step % args.save_every == 0:
        commit(step)
        committed = step
    if received:
        time.sleep(args.stop_seconds)  # a slow last checkpoint, the status still saying "running"
        if committed != step:
            commit(step)
            committed = step
        report("stopped", step, committed)
        sys.exit(args.exit_after_stop)
    report("running", step, committed)
report("completed", step, committed)
