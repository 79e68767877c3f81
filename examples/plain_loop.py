"""A plain single-process PyTorch training loop that survives time limits and preemptions.

    pccheck-submit --name plain --time 30 -- python examples/plain_loop.py --steps 20000

pccheck-submit runs it as a job; on a stop request (Slurm's warning signal, SIGTERM, the job's own
deadline) it checkpoints at the next step boundary and exits 75, the job is requeued and the next start
resumes bit-exactly from the newest checkpoint. It also runs without pccheck-submit (Ctrl-C or
SIGUSR2 stop it the same way; run it again to resume).
"""
import argparse
import json
import logging
import os

import torch

import pccheck


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--out", default=os.path.join(os.environ.get("PCCHECK_RUN_DIR", "."), "losses.json"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="[plain_loop] %(message)s")  # pccheck says when it stops

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, args.width), torch.nn.GELU(), torch.nn.Dropout(0.1),
                                torch.nn.Linear(args.width, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = torch.Generator().manual_seed(1)  # the batches: its state is part of the checkpoint
    target = torch.randn(32, 1, generator=torch.Generator().manual_seed(2))
    step, losses = 0, []

    ckpt = pccheck.Checkpointer(pccheck.checkpoint_dir("checkpoints"))
    loaded = ckpt.load_latest()  # the newest checkpoint that verifies, or None
    if loaded is not None:
        model.load_state_dict(loaded.state["model"])
        optimizer.load_state_dict(loaded.state["optimizer"])
        data.set_state(loaded.state["data"].clone())
        pccheck.set_rng_state(loaded.state["rng"])
        step, losses = loaded.step, loaded.state["losses"]
        print(f"resumed from step {step}", flush=True)

    def state() -> dict:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "data": data.get_state(),
                "rng": pccheck.rng_state(), "losses": losses}

    stop = pccheck.StopRequest(ckpt, total_steps=args.steps)
    while step < args.steps:
        x = torch.randn(64, 32, generator=data)
        loss = torch.nn.functional.mse_loss(model(x), x @ target)
        optimizer.zero_grad()
        loss.backward()
        ckpt.before_update()  # the snapshot of the last save has been copied: the weights may change
        optimizer.step()
        step += 1
        losses.append(loss.item())
        if step % args.save_every == 0:
            ckpt.save(step, state())
        if stop.check(step):  # a stop was requested: checkpoint this step, wait until durable, exit 75
            stop.exit(step, state())
    stop.completed(step)
    ckpt.close()
    with open(args.out, "w") as f:
        json.dump(losses, f)
    print(f"done: {step} steps, final loss {losses[-1]:.6f}; losses in {args.out}", flush=True)


if __name__ == "__main__":
    main()
