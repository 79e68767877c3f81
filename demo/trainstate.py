"""Everything a bit-exact resume needs, as one nested dict: model, optimizer, scheduler, step, data position, RNGs."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from pccheck import rng
from pccheck.errors import UserError

from .data import TokenSource
from .model import GPT


def fingerprint(model: GPT, dtype: torch.dtype) -> dict[str, Any]:
    """What must match for a checkpoint to load into this model."""
    return {**asdict(model.cfg), "dtype": str(dtype).removeprefix("torch.")}


def capture(
    step: int,
    model: GPT,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    data: TokenSource,
    dtype: torch.dtype,
) -> dict[str, Any]:
    """The live state (tensors are not copied here: the checkpointer snapshots them)."""
    return {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "data": data.state_dict(),
        "rng": rng.rng_state(),
        "config": fingerprint(model, dtype),
    }


def restore(
    state: dict[str, Any],
    model: GPT,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    data: TokenSource,
    dtype: torch.dtype,
) -> int:
    """Loads `state` into the live objects and returns its step."""
    _check_fits(state, model, dtype)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    data.load_state_dict(state["data"])
    rng.set_rng_state(state["rng"])
    return int(state["step"])


def capture_dcp(
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    data: TokenSource,
    cfg_model: GPT,
    dtype: torch.dtype,
) -> dict[str, Any]:
    """The live state for DCP (multi-rank): model and optimizer keyed by parameter name (DTensor shards
    under FSDP2), the rest as in capture()."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {
        "step": step, "model": model_sd, "optimizer": optim_sd, "scheduler": scheduler.state_dict(),
        "data": data.state_dict(), "rng": rng.rng_state(), "config": fingerprint(cfg_model, dtype),
    }


def restore_dcp(
    state: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    data: TokenSource,
    cfg_model: GPT,
    dtype: torch.dtype,
) -> int:
    """Loads a state shaped by capture_dcp() into the live objects and returns its step."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    _check_fits(state, cfg_model, dtype)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    data.load_state_dict(state["data"])
    rng.set_rng_state(state["rng"])
    return int(state["step"])


def _check_fits(state: dict[str, Any], model: GPT, dtype: torch.dtype) -> None:
    expected = fingerprint(model, dtype)
    found = state.get("config", {})
    diff = sorted(k for k in expected if found.get(k) != expected[k])
    if diff:
        pairs = ", ".join(f"{k}: checkpoint {found.get(k)!r} vs now {expected[k]!r}" for k in diff)
        raise UserError(f"checkpoint does not fit this model ({pairs}); pass the flags it was written with")
