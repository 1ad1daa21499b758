"""Summarise a sweep: read each job's TensorBoard log, print a table (mean ± std over seeds), save a plot.

    python scripts/results.py outputs/multirun/<time> [--out results.png]

Jobs are grouped by their Hydra overrides minus `seed`; each cell shows the mean ± std over the
group's seeds of the held-out metrics before training (first evaluation) and after (last one).
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

METRICS = ("val/accuracy", "val/pass@8", "val/maj@8")


def read_job(job_dir: Path) -> tuple[str, dict[str, list[tuple[int, float]]]] | None:
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    tb_dirs = list(job_dir.glob("tb"))
    if not overrides_file.exists() or not tb_dirs:
        return None
    overrides = [o for o in yaml.safe_load(overrides_file.read_text()) if not o.startswith("seed=")]
    events = EventAccumulator(str(tb_dirs[0]), size_guidance={"scalars": 0})
    events.Reload()
    series = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    return " ".join(sorted(overrides)) or "(defaults)", series


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * spread:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="+", type=Path, help="multirun folders (outputs/multirun/<time>)")
    parser.add_argument("--out", type=Path, default=Path("results.png"))
    args = parser.parse_args()

    cells: dict[str, list[dict]] = defaultdict(list)
    for sweep in args.sweeps:
        for job_dir in sorted(p for p in sweep.iterdir() if p.is_dir()):
            job = read_job(job_dir)
            if job:
                cells[job[0]].append(job[1])

    header = ["setting", "seeds"] + [f"{m.split('/')[1]} {when}" for m in METRICS for when in ("before", "after")]
    rows = []
    for name, runs in sorted(cells.items()):
        row = [name, str(len(runs))]
        for metric in METRICS:
            for pick in (0, -1):
                row.append(fmt([run[metric][pick][1] for run in runs if run.get(metric)]))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, runs in sorted(cells.items()):
        curves = [run["val/accuracy"] for run in runs if run.get("val/accuracy")]
        if not curves:
            continue
        steps = [s for s, _ in curves[0]]
        n = min(len(c) for c in curves)
        mean = [statistics.mean(c[i][1] for c in curves) for i in range(n)]
        ax.plot(steps[:n], mean, marker="o", label=f"{name} (n={len(curves)})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("held-out greedy accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"plot saved to {args.out}")


if __name__ == "__main__":
    main()
