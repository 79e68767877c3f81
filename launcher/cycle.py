"""The requeue cycle, from the job's records: how long each part of "stop, requeue, train again" took."""
from __future__ import annotations


def cycle_breakdown(events: list[dict]) -> list[dict]:
    """Per requeue: seconds from the stop signal to the first step after the restart, in parts."""
    out = []
    for i, e in enumerate(events):
        if e.get("event") != "stop":
            continue
        later = events[i + 1:]
        req = next((x for x in later if x.get("event") == "requeue"), None)
        start = next((x for x in later if x.get("event") == "start"), None)
        first = next((x for x in later if x.get("event") == "first_step" and start and x.get("run") == start.get("run")), None)
        if not (req and start and first):
            continue
        t_sig = e.get("signal_at") or e.get("stop_at")
        d = {
            "kind": e.get("kind"), "trigger": e.get("trigger"),
            "signal_to_step_boundary": e["stop_at"] - t_sig if t_sig and e.get("stop_at") else None,
            "checkpoint_durable": e["stopped_at"] - e["stop_at"] if e.get("stop_at") else None,
            "requeue_command": req["requeued_at"] - e["stopped_at"],
            "requeue_to_new_process": start["process_start"] - req["requeued_at"],
            "process_to_wrapper": start["fn_start"] - start["process_start"],
            "wrapper_to_first_step": first["time"] - start["fn_start"],
        }
        d["total"] = first["time"] - (t_sig or e["stopped_at"])
        out.append(d)
    return out


def cycle_report(events: list[dict]) -> list[str]:
    lines = []
    for n, d in enumerate(cycle_breakdown(events), 1):
        parts = ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in d.items()
                          if k not in ("kind", "trigger", "total") and v is not None)
        lines.append(f"requeue {n} ({d['kind']}, {d['trigger']}): {d['total']:.1f} s from signal to first step: {parts}")
    return lines
