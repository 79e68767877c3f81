"""A torchrun DDP training script that survives time limits and preemptions.

    pccheck-submit --name ddp --time 30 -- torchrun --standalone --nproc-per-node 4 examples/ddp_torchrun.py --steps 20000

Every rank trains; rank 0 saves the (replicated) model and optimizer. All ranks ask the same
StopRequest at every step boundary: a stop request that reaches any rank (Slurm's signal, SIGTERM to
one worker, the job's deadline) stops every rank at the same step, after rank 0's checkpoint is durable.
"""
import argparse
import json
import logging
import os

import torch
import torch.distributed as dist

import pccheck


def batch(step: int, rank: int) -> torch.Tensor:
    """Rank `rank`'s batch of step `step`: a pure function of both, so the data needs no checkpoint."""
    return torch.randn(64, 32, generator=torch.Generator().manual_seed(step * 1000 + rank))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--out", default=os.path.join(os.environ.get("PCCHECK_RUN_DIR", "."), "losses.json"))
    args = p.parse_args()

    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    logging.basicConfig(level=logging.INFO, format=f"[rank {rank}] %(message)s")  # pccheck says when it stops
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if torch.cuda.is_available() else torch.device("cpu")
    torch.manual_seed(0)  # the same initial weights and dropout stream on every rank
    model = torch.nn.Sequential(torch.nn.Linear(32, args.width), torch.nn.GELU(), torch.nn.Dropout(0.1),
                                torch.nn.Linear(args.width, 1)).to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    target = torch.randn(32, 1, generator=torch.Generator().manual_seed(2)).to(device)
    step, losses = 0, []

    directory = pccheck.checkpoint_dir("checkpoints")
    ckpt = pccheck.Checkpointer(directory) if rank == 0 else None  # rank 0 writes; every rank reads
    if os.path.exists(os.path.join(directory, "pccheck.ckpt")):
        state = pccheck.load(directory)  # the newest checkpoint that verifies
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        pccheck.set_rng_state(state["rng"])
        step, losses = state["step"], state["losses"]
        if rank == 0:
            print(f"resumed from step {step}", flush=True)

    def state() -> dict:
        return {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "rng": pccheck.rng_state(), "losses": losses}

    stop = pccheck.StopRequest(ckpt, total_steps=args.steps)  # collective: every rank creates it
    while step < args.steps:
        x = batch(step, rank).to(device)
        loss = torch.nn.functional.mse_loss(ddp(x), x @ target)
        optimizer.zero_grad()
        loss.backward()
        if ckpt is not None:
            ckpt.before_update()
        optimizer.step()
        step += 1
        dist.all_reduce(loss.detach(), op=dist.ReduceOp.SUM)
        losses.append(loss.item() / world)
        if ckpt is not None and step % args.save_every == 0:
            ckpt.save(step, state())
        if stop.check(step):  # the same answer on every rank
            stop.exit(step, state() if rank == 0 else None)
    stop.completed(step)
    if ckpt is not None:
        ckpt.close()
        with open(args.out, "w") as f:
            json.dump(losses, f)
        print(f"done: {step} steps, final loss {losses[-1]:.6f}; losses in {args.out}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
