"""Summarise sweeps: read each job's TensorBoard log, print a table (mean ± std over seeds), save a plot.

    python scripts/results.py outputs/multirun/<time> [more sweeps...] [--out results.png]
    python scripts/results.py <sweeps...> --compare "supervision=outcome" "supervision=process" [--at-step 50]
    python scripts/results.py <sweep> --seeds seed model.seed     # pool warm starts too; split the spread between them
    python scripts/results.py <sweep> --baseline variant=grpo      # every cell against one: the variant comparison

A cell is the jobs whose Hydra overrides are equal once `seed` (or every key given to --seeds) is left out; overrides shared by every
job are printed once above the table. Each cell shows, over its seeds, the mean ± std of the held-out
metrics before RL (the first evaluation) and after (the last one, with the lowest and highest seed), and their
difference. --compare A B tests whether two cells' final greedy accuracies differ (an exact permutation test over
their seeds: no distribution assumed, sound for 5 seeds a cell). The plot
(needs matplotlib: `pip install -e .[analysis]`) shows each cell's mean greedy accuracy per step, with a band from its
lowest to its highest seed; `--label CELL TEXT` gives a cell a legend text of its own.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

Series = dict[str, list[tuple[int, float]]]  # tag -> [(step, value)]
WALL = "wall:train/loss"  # (GRPO step, wall-clock time) of each logged GRPO step's loss
PER_STEP = "rollout/reward_mean"  # logged once per GRPO step: its x values say which optimizer step each GRPO step ended at


def read_job(job_dir: Path, seed_keys=("seed",)) -> tuple[list[str], Series] | None:
    """(overrides without the seed keys, scalar series) of a finished or running job; None if it has no log yet.
    The series also hold each seed key's value as `seed:<key>` (a one-point series), for `variance_split`."""
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.exists() or not (job_dir / "tb").is_dir():
        return None
    everything = yaml.safe_load(overrides_file.read_text()) or []
    is_seed = lambda o: o.split("=", 1)[0] in seed_keys
    overrides = [o for o in everything if not is_seed(o)]
    events = EventAccumulator(str(job_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()["scalars"]
    series = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in tags}
    # TensorBoard's x is the optimizer step: with grpo.mu > 1 or mini-batches a GRPO step takes several (and how many can
    # vary from step to step). Held-out metrics and step times go onto GRPO steps: an evaluation logged at optimizer
    # step x follows the GRPO steps whose rollout was logged before x.
    ends = sorted(x for x, _ in series.get(PER_STEP, []))
    grpo_step = (lambda x: bisect.bisect_left(ends, x)) if ends else (lambda x: x)
    for tag in tags:
        if tag.startswith(("val/", "final/")):
            series[tag] = [(grpo_step(x), v) for x, v in series[tag]]
    series |= {f"seed:{o.split('=', 1)[0]}": [(0, o.split("=", 1)[1])] for o in everything if is_seed(o)}
    if "train/loss" in tags:  # when each GRPO step's loss was logged: seconds per GRPO step
        series[WALL] = [(bisect.bisect_right(ends, e.step) if ends else e.step, e.wall_time) for e in events.Scalars("train/loss")]
    return overrides, series


def collect(sweeps: list[Path], seed_keys=("seed",)) -> tuple[list[str], dict[str, list[Series]]]:
    """(overrides common to every job, {cell name: [series of each seed]}); seed_keys: the overrides a cell pools over."""
    jobs = [job for sweep in sweeps for d in sorted(p for p in sweep.iterdir() if p.is_dir()) if (job := read_job(d, seed_keys))]
    if not jobs:
        raise SystemExit(f"No Hydra jobs with TensorBoard logs (<job>/.hydra/overrides.yaml and <job>/tb/) under {sweeps}")
    common = sorted(set.intersection(*(set(o) for o, _ in jobs)))
    cells: dict[str, list[Series]] = defaultdict(list)
    for overrides, series in jobs:
        cells[" ".join(sorted(set(overrides) - set(common))) or "(common only)"].append(series)
    return common, dict(cells)


def fmt(values: list[float], with_range: bool = False) -> str:
    """In points: mean ± std over the seeds, and with_range: the lowest and highest seed, `[min, max]`."""
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    text = f"{100 * statistics.mean(values):.1f} ± {100 * spread:.1f}"
    return text + f" [{100 * min(values):.1f}, {100 * max(values):.1f}]" if with_range else text


def permutation_test(a: list[float], b: list[float]) -> tuple[float, float]:
    """(mean(a) - mean(b), two-sided p): the exact permutation test over every split of a + b into groups of len(a)
    and len(b) seeds; p is the share of splits whose difference of means is at least as large in size."""
    pooled, observed = a + b, statistics.mean(a) - statistics.mean(b)
    splits = list(itertools.combinations(range(len(pooled)), len(a)))
    extreme = 0
    for chosen in splits:
        left = [pooled[i] for i in chosen]
        right = [pooled[i] for i in range(len(pooled)) if i not in set(chosen)]
        extreme += abs(statistics.mean(left) - statistics.mean(right)) >= abs(observed) - 1e-12
    return observed, extreme / len(splits)


def held_out_metrics(cells: dict[str, list[Series]]) -> list[str]:
    """val/accuracy, then every val/pass@k and val/maj@k the runs logged (whatever eval.k was), sorted."""
    tags = {tag for runs in cells.values() for run in runs for tag in run if tag.startswith(("val/pass@", "val/maj@"))}
    return ["val/accuracy", *sorted(tags, key=lambda t: (t.split("@")[0], int(t.split("@")[1])))]


def table(cells: dict[str, list[Series]], metrics=None) -> str:
    """A Markdown table: per cell, seeds and, per metric, before / after / change (in points)."""
    metrics = metrics or held_out_metrics(cells)
    header = ["setting", "seeds"]
    for metric in metrics:
        name = metric.split("/")[-1]
        header += [f"{name} before", f"{name} after", f"{name} change"]
    rows = []
    for name, runs in sorted(cells.items()):
        row = [name, str(len(runs))]
        for metric in metrics:
            done = [run[metric] for run in runs if len(run.get(metric, [])) >= 2]
            row += [fmt([s[0][1] for s in done]), fmt([s[-1][1] for s in done], with_range=True),
                    fmt([s[-1][1] - s[0][1] for s in done])]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    return "\n".join(lines)


def compare(cells: dict[str, list[Series]], a: str, b: str, metric: str = "val/accuracy", step: int | None = None) -> str:
    """A line: how far cell a's `metric` is from cell b's (points), final or at evaluation `step`, with the
    permutation test's p."""
    a, b = cell_named(cells, a, "--compare"), cell_named(cells, b, "--compare")
    curves = {name: [dict(run[metric]) for run in cells[name] if run.get(metric)] for name in (a, b)}  # step -> value
    if step is None:
        values = {name: [curve[max(curve)] for curve in curves[name]] for name in (a, b)}
    else:
        for name in (a, b):
            if any(step not in curve for curve in curves[name]):
                logged = sorted({s for curve in curves[name] for s in curve})
                raise SystemExit(f"Not every run of [{name}] logged {metric} at step {step}; its evaluation steps are {logged}")
        values = {name: [curve[step] for curve in curves[name]] for name in (a, b)}
    diff, p = permutation_test(values[a], values[b])
    when = "after" if step is None else f"at step {step}"
    return (f"{metric} {when}: [{a}] - [{b}] = {100 * diff:+.1f} points over {len(values[a])} and {len(values[b])} seeds, "
            f"exact permutation test p = {p:.3f}")


def variance_split(runs: list[Series], key: str, metric: str = "val/accuracy") -> str:
    """How much of a cell's spread in final `metric` the seed key `key` explains (one-way ANOVA decomposition):
    total variance = variance of the per-`key` means (between) + mean variance within each `key` value
    (population variances, so the two parts add up exactly). A line, in points."""
    groups: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        if len(run.get(metric, [])) >= 2 and run.get(f"seed:{key}"):  # evaluated before and after, as `table` counts
            groups[run[f"seed:{key}"][0][1]].append(run[metric][-1][1])
    values = [v for g in groups.values() for v in g]
    if len(groups) < 2 or not values:
        return f"{key}: fewer than 2 values of it in this cell, nothing to split"
    var = lambda xs: statistics.pvariance(xs) if len(xs) > 1 else 0.0
    grand = statistics.mean(values)
    between = sum(len(g) * (statistics.mean(g) - grand) ** 2 for g in groups.values()) / len(values)
    within = sum(len(g) * var(g) for g in groups.values()) / len(values)
    total = between + within
    means = ", ".join(f"{k}: {100 * statistics.mean(g):.1f}" for k, g in sorted(groups.items()))
    share = between / total if total > 0 else 0.0
    return (f"{key} explains {100 * share:.0f}% of the variance of final {metric.split('/')[-1]} (between {key} values: "
            f"std {100 * between ** 0.5:.1f} points; within: std {100 * within ** 0.5:.1f}); means per {key}: {means}")


def seconds_per_step(run: Series) -> float | None:
    """Median wall-clock seconds between consecutive logged GRPO steps (evaluation pauses do not move a median)."""
    wall = run.get(WALL, [])
    gaps = [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(wall, wall[1:]) if s1 > s0]
    return statistics.median(gaps) if gaps else None


def against_baseline(cells: dict[str, list[Series]], baseline: str, step: int = 50) -> str:
    """A Markdown table of every cell against `baseline`: final greedy accuracy with the exact permutation test's p,
    greedy at evaluation `step` with its p, final pass@k / maj@k, the policy entropy at the last step, seconds per
    GRPO step (each run's median, then the median over its seeds; comparable only between runs on the same machine under
    the same load)."""
    baseline = cell_named(cells, baseline, "--baseline")
    metric = "val/accuracy"
    extra = [t for t in held_out_metrics(cells) if t != metric]

    def at(run: Series, tag: str, when: int | None):
        curve = dict(run.get(tag, []))
        if len(curve) < (2 if when is None and tag.startswith("val/") else 1):  # "after": an evaluation after the first
            return None
        return curve[max(curve)] if when is None else curve.get(when)

    def values(name: str, tag: str, when: int | None) -> list[float]:
        return [v for run in cells[name] if (v := at(run, tag, when)) is not None]

    def p_value(name: str, when: int | None) -> str:
        if name == baseline:
            return "-"
        a, b = values(name, metric, when), values(baseline, metric, when)
        return f"{permutation_test(a, b)[1]:.3f}" if a and b else "-"

    header = ["setting", "seeds", "greedy after", "p", f"greedy at {step}", "p", *[f"{t.split('/')[-1]} after" for t in extra],
              "entropy at end", "s / step"]
    rows = []
    for name in [baseline] + sorted(set(cells) - {baseline}):
        entropy = values(name, "train/entropy", None)
        times = [t for run in cells[name] if (t := seconds_per_step(run)) is not None]
        rows.append([name, str(len(cells[name])), fmt(values(name, metric, None), with_range=True), p_value(name, None),
                     fmt(values(name, metric, step)), p_value(name, step), *[fmt(values(name, t, None)) for t in extra],
                     f"{statistics.mean(entropy):.3f}" if entropy else "-",
                     f"{statistics.median(times):.2f}" if times else "-"])  # over seeds: a run slowed by other jobs moves it less
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = [f"against [{baseline}] (p: exact permutation test of the mean greedy accuracy over seeds)",
             "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    return "\n".join(lines)


def cell_named(cells: dict[str, list[Series]], key: str, option: str = "--label") -> str:
    """The cell `key` names: its whole name, a part of the name that no other cell's has, or else the start of
    exactly one cell's name (`option`: the command-line option that gave it, for the error)."""
    if key in cells:
        return key
    found = [name for name in cells if key in name]
    if len(found) > 1 and sum(name.startswith(key) for name in found) == 1:
        found = [name for name in found if name.startswith(key)]
    if len(found) != 1:
        how = "no" if not found else f"{len(found)}"
        raise SystemExit(f"{option} {key!r} names {how} cells; give a cell's name as the table prints it, a part of "
                         f"it only that name has, or the start of only that name. The cells: {'; '.join(sorted(cells))}")
    return found[0]


def plot(cells: dict[str, list[Series]], out: Path, metric: str = "val/accuracy", labels: dict[str, str] | None = None,
         title: str | None = None) -> list[tuple[str, list[int], list[float], list[float], list[float]]]:
    """Each cell's mean `metric` per step (in %), with a band from its lowest to its highest seed; returns what it drew:
    (legend label, steps, mean, lowest, highest) per cell. labels: {cell name: legend label}; a cell not in it is
    labelled by its name."""
    labels = {cell_named(cells, key): text for key, text in (labels or {}).items()}
    try:
        import matplotlib
    except ImportError:
        sys.exit("The plot needs matplotlib: `.venv/bin/pip install -e '.[analysis]'` (the table above is complete)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = []
    fig, ax = plt.subplots(figsize=(8, 5))
    for name in [*labels, *sorted(set(cells) - set(labels))]:  # the labelled cells first, in the order given
        runs = cells[name]
        curves = [run[metric] for run in runs if run.get(metric)]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        steps = [s for s, _ in curves[0][:n]]
        at = [[100 * c[i][1] for c in curves] for i in range(n)]  # [step][seed], in %
        mean, low, high = [statistics.mean(v) for v in at], [min(v) for v in at], [max(v) for v in at]
        label = f"{labels.get(name, name)} (n={len(curves)})"
        ax.plot(steps, mean, marker="o", label=label)
        if len(curves) > 1:
            ax.fill_between(steps, low, high, alpha=0.15)
        drawn.append((label, steps, mean, low, high))
    ax.set_xlabel("GRPO step")
    ax.set_ylabel(f"held-out {metric.split('/')[-1]} (%): mean over seeds, band lowest to highest")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"plot saved to {out}")
    return drawn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="+", type=Path, help="multirun folders (outputs/multirun/<time>)")
    parser.add_argument("--out", type=Path, default=Path("results.png"), help="where the plot goes")
    parser.add_argument("--no-plot", action="store_true", help="print the table only")
    parser.add_argument("--compare", nargs=2, action="append", metavar=("CELL_A", "CELL_B"), default=[],
                        help="two cells, each named as --label names one (its name as the table prints it, or a "
                             "part of it only that name has, e.g. advantage.outcome_scale=group): the difference of "
                             "their mean final val/accuracy and the exact permutation test's p over their seeds "
                             "(repeatable)")
    parser.add_argument("--seeds", nargs="+", default=["seed"], metavar="KEY",
                        help="overrides a cell pools over (default: seed); with several, e.g. --seeds seed model.seed, "
                             "each key's share of the spread of final accuracy is printed per cell")
    parser.add_argument("--at-step", type=int, default=None,
                        help="--compare the evaluation at this GRPO step (e.g. 50) instead of the last one")
    parser.add_argument("--baseline", default=None, metavar="CELL",
                        help="a cell, named as --label names one (e.g. variant=grpo): a second table compares "
                             "every cell with it (p-values, greedy at --at-step or 50, entropy at the end, seconds "
                             "per step)")
    parser.add_argument("--label", nargs=2, action="append", default=[], metavar=("CELL", "TEXT"),
                        help="the plot's legend text for a cell: CELL is its name as the table prints it, a part of "
                             "it only that name has (e.g. reward=prm_verifier), or the start of only that name; e.g. "
                             "--label \"(common only)\" \"verifier only\"; repeatable; labelled cells are drawn first, in this order")
    parser.add_argument("--title", default=None, help="the plot's title")
    args = parser.parse_args()
    missing = [str(s) for s in args.sweeps if not s.is_dir()]
    if missing:
        raise SystemExit(f"Not a folder: {', '.join(missing)}; pass sweep folders such as outputs/multirun/<time>")
    common, cells = collect(args.sweeps, tuple(args.seeds))
    if common:
        print("every job: " + " ".join(common))
    print(table(cells))
    if len(args.seeds) > 1:
        for name, runs in sorted(cells.items()):
            for key in args.seeds:
                print(f"[{name}] {variance_split(runs, key)}")
    for a, b in args.compare:
        print(compare(cells, a, b, step=args.at_step))
    if args.baseline is not None:
        print(against_baseline(cells, args.baseline, step=args.at_step or 50))
    if not args.no_plot:
        plot(cells, args.out, labels=dict(args.label), title=args.title)


if __name__ == "__main__":
    main()
