"""A user's script written against the job contract alone (docs/jobs.md), without pccheck's loop helpers:
it handles the stop signal and SIGTERM itself (a flag), checkpoints with pccheck.Checkpointer into
$PCCHECK_CHECKPOINT_DIR, and exits 75 once the checkpoint is durable. Its output (--out) is a pure
function of the training, so an interrupted and resumed run must write the same bytes."""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time

import torch

import pccheck

stop = []
signal.signal(signal.Signals[os.environ.get("PCCHECK_STOP_SIGNAL", "SIGUSR2")], lambda s, f: stop.append(s))
signal.signal(signal.SIGTERM, lambda s, f: stop.append(s))

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=3000)
p.add_argument("--save-every", type=int, default=200)
p.add_argument("--step-seconds", type=float, default=0.0, help="extra time per step (a bigger model)")
p.add_argument("--out", required=True)
args = p.parse_args()

torch.manual_seed(0)
random.seed(0)
w = torch.zeros(16, requires_grad=True)
opt = torch.optim.SGD([w], lr=0.05, momentum=0.9)
step, trace = 0, []
ckpt = pccheck.Checkpointer(os.environ.get("PCCHECK_CHECKPOINT_DIR", "checkpoints"))
loaded = ckpt.load_latest()
if loaded is not None:
    w.data.copy_(loaded.state["w"])
    opt.load_state_dict(loaded.state["opt"])
    torch.set_rng_state(loaded.state["torch_rng"].clone())
    random.setstate((3, tuple(loaded.state["py_rng"]), None))
    step, trace = loaded.step, loaded.state["trace"]


def state() -> dict:
    return {"w": w.detach(), "opt": opt.state_dict(), "torch_rng": torch.get_rng_state(),
            "py_rng": list(random.getstate()[1]), "trace": trace}


while step < args.steps:
    x = torch.randn(32, 16)
    loss = ((x @ w - x.sum(1) * random.random()) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    time.sleep(args.step_seconds)
    step += 1
    trace.append(loss.item())
    if step % args.save_every == 0 or stop:
        ckpt.save(step, state())
    if stop:
        ckpt.wait()  # durable
        ckpt.close()
        for sig in (signal.SIGTERM, signal.SIGUSR2):  # decided: a late signal must not turn 75 into a kill
            signal.signal(sig, signal.SIG_IGN)
        sys.exit(75)
ckpt.close()
with open(args.out, "w") as f:
    json.dump(trace, f)
