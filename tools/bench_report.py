"""pccheck-bench output: the targets (pass/miss), the rich table with the ratios, and the PNG chart."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from rich.console import Console
from rich.table import Table

from .bench_io import spread

MiB = 1 << 20


@dataclass
class Target:
    name: str
    ratio: Callable[[dict[str, Any]], Optional[float]]  # the measured ratio (None: not measured)
    limit: float  # pass when ratio <= limit (or < limit when strict)
    shown: str  # how the ratio and its limit read
    strict: bool = False


def _div(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or b <= 0:
        return None
    return a / b


#: Ratios taken within each repetition of the storage measurements: name -> (numerator, denominator).
RATIOS = {
    "snapshot/floor": ("snapshot_s", "stall_floor_s"),
    "blocked/floor": ("stall_s", "stall_floor_s"),
    "blocked/torch.save": ("stall_s", "baseline_stall_s"),
    "blocked/DCP": ("stall_s", "dcp_stall_s"),
    "durable/raw write": ("durable_s", "disk_write_s"),
    "durable/DCP": ("durable_s", "dcp_durable_s"),
    "load/raw read": ("load_s", "disk_read_s"),
    "load/torch.load": ("load_s", "baseline_load_s"),
    "compute with copy/compute": ("compute_with_copy_s", "compute_s"),
}


def paired_ratios(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Each of RATIOS taken within every repetition (both sides measured back to back), then summarized: a
    slow spell of the machine moves both sides of one ratio, not one side of the median of another."""
    return {name: spread([a / b for a, b in zip(samples[num], samples[den])])
            for name, (num, den) in RATIOS.items() if samples.get(num) and samples.get(den)}


def _paired(name: str) -> Callable[[dict[str, Any]], Optional[float]]:
    return lambda r: (r.get("ratios") or {}).get(name, {}).get("median")


def _overhead_ratio(r: dict[str, Any], mine: str, theirs: str) -> Optional[float]:
    if r.get(mine) is None or not r.get(theirs) or r[theirs] <= 0:
        return None
    return max(r[mine], 0.0) / r[theirs]


TARGETS = [
    # Today's "stall <= 1.5 x copy floor", tightened: the copy runs beside the next step's compute, so training
    # is blocked for less than one memcpy of the state. The copy alone ("snapshot/floor") is reported, not judged.
    Target("stall < copy floor, compute covering the copy", _paired("blocked/floor"), 1.0,
           "blocked / memcpy", strict=True),
    Target("stall <= 1/10 of torch.save's", _paired("blocked/torch.save"), 0.1, "blocked / torch.save blocked"),
    Target("stall <= 1/3 of DCP's", _paired("blocked/DCP"), 1 / 3, "blocked / DCP blocked"),
    Target("durable within 1/0.9 of raw write", _paired("durable/raw write"), 1 / 0.9, "durable / raw write"),
    Target("durable <= 1/3 of DCP's", _paired("durable/DCP"), 1 / 3, "durable / DCP durable"),
    Target("overhead every 10 <= 5%", lambda r: r.get("overhead_every_10"), 0.05, "overhead"),
    Target("overhead every 10 < 1/5 of torch.save's",
           lambda r: _overhead_ratio(r, "overhead_every_10", "baseline_overhead_every_10"), 0.2,
           "overhead / torch.save overhead", strict=True),
    Target("overhead every step <= 5%", lambda r: r.get("overhead_every_1"), 0.05, "overhead, default model"),
    Target("overhead every step <= 2%, seq-1024 model", lambda r: r.get("overhead_every_1_seq1024"), 0.02,
           "overhead, --sequence-length 1024"),
    Target("load within 1/0.9 of raw read", _paired("load/raw read"), 1 / 0.9, "load / raw read into fresh memory"),
    Target("load no slower than torch.load", _paired("load/torch.load"), 1.0, "load / torch.load"),
    Target("peak extra <= budget + 64 MiB",
           lambda r: None if r.get("peak_extra_bytes") is None else _div(r["peak_extra_bytes"], r["memory_budget_bytes"] + 64 * MiB),
           1.0, "peak extra / (budget + 64 MiB)"),
]


def evaluate(r: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for t in TARGETS:
        try:
            ratio = t.ratio(r)
        except KeyError:
            ratio = None
        ok = None if ratio is None else (ratio < t.limit if t.strict else ratio <= t.limit)
        out.append({"target": t.name, "ratio": ratio, "limit": t.limit, "measure": t.shown, "pass": ok})
    return out


def _s(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.3f} s"


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:+.1f}%"


def _spread_pct(r: dict[str, Any], key: str) -> str:
    row = (r.get("overheads") or {}).get(key)
    if row is None:
        return _pct(r.get(key))
    return f"{_pct(row['median'])} [{_pct(row['q25'])}, {_pct(row['q75'])}]"


def table(r: dict[str, Any]) -> Table:
    gb = r["state_bytes"] / (1 << 30)
    t = Table(title=f"pccheck-bench: {r['state_bytes'] / MiB:.0f} MiB state ({gb:.2f} GiB), medians")
    for col in ("", "pccheck", "torch.save+fsync", "DCP async_save", "machine floor"):
        t.add_column(col, justify="right" if col else "left")
    t.add_row("blocked per checkpoint, compute covering the copy", _s(r["stall_s"]), _s(r["baseline_stall_s"]),
              _s(r["dcp_stall_s"]), f"{_s(r['stall_floor_s'])} (memcpy)")
    t.add_row("  without compute (the copy itself)", _s(r.get("snapshot_s")), "", "", "")
    t.add_row("save -> durable", _s(r["durable_s"]), _s(r["baseline_durable_s"]), _s(r["dcp_durable_s"]),
              f"{_s(r['disk_write_s'])} (raw write)")
    bw = lambda s: "-" if not s else f"{r['state_bytes'] / s / 1e9:.2f} GB/s"  # noqa: E731
    t.add_row("  as bandwidth", bw(r["durable_s"]), bw(r["baseline_durable_s"]), bw(r["dcp_durable_s"]), bw(r["disk_write_s"]))
    t.add_row("load, cold cache", _s(r["load_s"]), _s(r["baseline_load_s"]) + " (torch.load)",
              _s(r.get("dcp_load_s")), f"{_s(r['disk_read_s'])} (raw read)")
    for freq in (1, 10, 50):
        t.add_row(f"overhead, ckpt every {freq} step{'s' if freq > 1 else ''} [quartiles]",
                  _spread_pct(r, f"overhead_every_{freq}"), _spread_pct(r, f"baseline_overhead_every_{freq}"), "-", "")
    t.add_row("overhead, every step, seq-1024 model", _spread_pct(r, "overhead_every_1_seq1024"), "-", "-", "")
    mem = lambda n: "-" if n is None else f"{n / MiB:.0f} MiB"  # noqa: E731
    t.add_row("peak memory above no checkpoint", mem(r.get("peak_extra_bytes")), mem(r.get("baseline_peak_extra_bytes")),
              mem(r.get("dcp_peak_extra_bytes")), f"budget {mem(r['memory_budget_bytes'])}")
    return t


def targets_table(results: list[dict[str, Any]]) -> Table:
    t = Table(title="targets")
    for col in ("target", "measured", "limit", "result"):
        t.add_column(col)
    for row in results:
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.3f}"
        verdict = {True: "[green]pass", False: "[red]miss", None: "[yellow]n/a"}[row["pass"]]
        t.add_row(row["target"], f"{row['measure']} = {ratio}", f"<= {row['limit']:.3f}", verdict)
    return t


def verdict_line(results: list[dict[str, Any]]) -> str:
    """One line with every target's verdict and ratio, to compare runs."""
    return "; ".join(f"{r['target']}: {'pass' if r['pass'] else 'n/a' if r['pass'] is None else 'MISS'}"
                     f" ({'-' if r['ratio'] is None else format(r['ratio'], '.3f')})" for r in results)


def sweep_table(rows: list[dict[str, Any]], picked: dict[str, Any]) -> Table:
    t = Table(title="auto-tune sweep (budget = max_async states; burst of max_async + 1 saves)")
    for col in ("threads", "max_async", "chunk", "GB/s", "first stall", "peak extra", ""):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(str(r["threads"]), str(r["max_async"]), f"{r['chunk_size'] // MiB}M", f"{r['bandwidth'] / 1e9:.2f}",
                  f"{r['stall_first_s']:.3f} s", f"{r['peak_extra'] / MiB:.0f} MiB", "<- picked" if r is picked else "")
    return t


def print_all(r: dict[str, Any], console: Optional[Console] = None) -> None:
    console = console or Console()
    console.print(table(r))
    console.print(targets_table(r["targets"]))


def chart(r: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    groups = ["blocked\n(compute covers copy)", "copy alone\n(no compute)", "to durable", "load (cold)"]
    series = [
        ("pccheck", [r["stall_s"], r.get("snapshot_s"), r["durable_s"], r["load_s"]], "tab:green"),
        ("torch.save+fsync / torch.load", [r["baseline_stall_s"], None, r["baseline_durable_s"], r["baseline_load_s"]], "tab:red"),
        ("DCP async_save", [r["dcp_stall_s"], None, r["dcp_durable_s"], r.get("dcp_load_s")], "tab:orange"),
        ("machine floor (memcpy / raw write / raw read)",
         [r["stall_floor_s"], r["stall_floor_s"], r["disk_write_s"], r["disk_read_s"]], "tab:gray"),
    ]
    width = 0.2
    for i, (label, vals, color) in enumerate(series):
        xs = [g + (i - 1.5) * width for g in range(len(groups))]
        ys = [v if v is not None else 0.0 for v in vals]
        bars = ax1.bar(xs, ys, width, label=label, color=color)
        for b, v in zip(bars, vals):
            if v is not None:
                label = f"{v:.2f}" if v >= 0.01 else f"{v:.1g}"  # a blocked time of 0.0004 s is not 0.00
                ax1.annotate(label, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=7)
    ax1.set_xticks(range(len(groups)), groups)
    ax1.set_ylabel("seconds")
    ax1.set_title(f"{r['state_bytes'] / (1 << 30):.2f} GiB state, per checkpoint")
    ax1.legend(fontsize=8)
    labels = ["every step", "every 10", "every 50", "every step\nseq-1024"]
    pc = [100 * (r.get(k) or 0) for k in ("overhead_every_1", "overhead_every_10", "overhead_every_50", "overhead_every_1_seq1024")]
    ts = [100 * (r.get(k) or 0) for k in ("baseline_overhead_every_1", "baseline_overhead_every_10", "baseline_overhead_every_50")]
    xs = range(len(labels))
    ax2.bar([x - 0.2 for x in xs], pc, 0.4, label="pccheck", color="tab:green")
    ax2.bar([x + 0.2 for x in xs[: len(ts)]], ts, 0.4, label="torch.save+fsync", color="tab:red")
    for x, v in zip(xs, pc):
        ax2.annotate(f"{v:.1f}%", (x - 0.2, max(v, 0)), ha="center", va="bottom", fontsize=8)
    for x, v in zip(xs, ts):
        ax2.annotate(f"{v:.1f}%", (x + 0.2, max(v, 0)), ha="center", va="bottom", fontsize=8)
    ax2.axhline(5, color="black", lw=0.8, ls=":", label="5% target")
    ax2.set_xticks(list(xs), labels)
    ax2.set_ylabel("training time overhead (%)")
    ax2.set_title("training overhead (medians), checkpoint every N steps")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
