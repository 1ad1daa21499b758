"""scripts/results.py: cells from a sweep's Hydra overrides (seed left out), before/after/change per metric."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from torch.utils.tensorboard import SummaryWriter

from grpo_testkit import load_script



@pytest.fixture(scope="module")
def results():
    return load_script("results")


def fake_job(job_dir: Path, overrides: list[str], accuracy: list[float]) -> None:
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    writer = SummaryWriter(str(job_dir / "tb"))
    for step, value in zip((0, 50, 100), accuracy):
        writer.add_scalar("val/accuracy", value, step)
        writer.add_scalar("val/maj@4", value / 2, step)  # whatever eval.k the sweep used
    writer.close()


def test_table_groups_seeds_and_reports_before_after_change(tmp_path, results):
    sweep = tmp_path / "sweep"
    fake_job(sweep / "0", ["grpo.steps=100", "supervision=outcome", "seed=0"], [0.5, 0.6, 0.7])
    fake_job(sweep / "1", ["grpo.steps=100", "supervision=outcome", "seed=1"], [0.5, 0.7, 0.9])
    fake_job(sweep / "2", ["grpo.steps=100", "supervision=process", "seed=0"], [0.4, 0.4, 0.4])
    (sweep / "3").mkdir()  # a job that has not logged anything yet: skipped

    common, cells = results.collect([sweep])
    assert common == ["grpo.steps=100"]
    assert sorted(cells) == ["supervision=outcome", "supervision=process"]
    assert len(cells["supervision=outcome"]) == 2

    assert results.held_out_metrics(cells) == ["val/accuracy", "val/maj@4"]
    lines = results.table(cells).splitlines()
    outcome = next(line for line in lines if line.startswith("| supervision=outcome"))
    cols = [c.strip() for c in outcome.strip("|").split("|")]
    # accuracy: before 50 ± 0, after mean(70, 90) = 80 ± 14.1, change 30 ± 14.1; maj@4 is half of it
    # "after" also gives the lowest and highest seed
    assert cols[1:] == ["2", "50.0 ± 0.0", "80.0 ± 14.1 [70.0, 90.0]", "30.0 ± 14.1", "25.0 ± 0.0", "40.0 ± 7.1 [35.0, 45.0]",
                        "15.0 ± 7.1"]
    process = next(line for line in lines if line.startswith("| supervision=process"))
    assert [c.strip() for c in process.strip("|").split("|")][1:5] == ["1", "40.0 ± 0.0", "40.0 ± 0.0 [40.0, 40.0]", "0.0 ± 0.0"]

    # outcome's final accuracies 70, 90 against process's 40: +40 points; of the 3 ways to pick 1 of the 3 runs as
    # "process" only 40 alone reaches 40 in size (90 alone: 55 - 90 = -35; 70 alone: 65 - 70 = -5): p = 1/3
    assert results.compare(cells, "supervision=outcome", "supervision=process") == (
        "val/accuracy after: [supervision=outcome] - [supervision=process] = +40.0 points over 2 and 1 seeds, "
        "exact permutation test p = 0.333")
    with pytest.raises(SystemExit, match=r"--compare 'supervision=rloo' names no cells"):
        results.compare(cells, "supervision=outcome", "supervision=rloo")
    # a cell is named as --label names one: a part of its name that only it has gives the same line, full names in it
    assert results.compare(cells, "=outcome", "=process") == results.compare(cells, "supervision=outcome", "supervision=process")
    with pytest.raises(SystemExit, match=r"--compare 'supervision=' names 2 cells"):
        results.compare(cells, "supervision=", "supervision=process")
    # at step 50: outcome 60, 70 against process 40: +25 points; only 40 alone reaches |25| (60 alone: -5, 70: -20)
    assert results.compare(cells, "supervision=outcome", "supervision=process", step=50) == (
        "val/accuracy at step 50: [supervision=outcome] - [supervision=process] = +25.0 points over 2 and 1 seeds, "
        "exact permutation test p = 0.333")
    with pytest.raises(SystemExit, match=r"at step 75; its evaluation steps are \[0, 50, 100\]"):
        results.compare(cells, "supervision=outcome", "supervision=process", step=75)


def test_permutation_test_by_hand(results):
    # 1,2,3 vs 4,5,6: difference -3; of the 20 ways to split six values 3 / 3 only the two extreme splits reach |3|
    diff, p = results.permutation_test([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert diff == pytest.approx(-3.0) and p == pytest.approx(2 / 20)
    # equal groups: every split is as extreme as the observed 0
    assert results.permutation_test([1.0, 1.0], [1.0, 1.0]) == (0.0, 1.0)


def test_an_empty_folder_gives_a_clear_error(tmp_path, results):
    with pytest.raises(SystemExit, match="No Hydra jobs with TensorBoard logs"):
        results.collect([tmp_path])


def test_seeds_pool_warm_starts_and_split_the_spread(tmp_path, results):
    sweep = tmp_path / "sweep"
    # 2 warm starts (model.seed) x 2 rollout seeds; final accuracies: ws 0 -> 0.6, 0.8; ws 1 -> 0.4, 0.6
    for i, (ws, seed, final) in enumerate([(0, 0, 0.6), (0, 1, 0.8), (1, 0, 0.4), (1, 1, 0.6)]):
        fake_job(sweep / str(i), ["grpo.steps=100", f"model.seed={ws}", f"seed={seed}"], [0.5, 0.5, final])
    _, cells = results.collect([sweep], ("seed", "model.seed"))
    assert list(cells) == ["(common only)"] and len(cells["(common only)"]) == 4
    _, by_default = results.collect([sweep])  # only `seed` pooled: one cell per warm start
    assert sorted(by_default) == ["model.seed=0", "model.seed=1"]
    # grand mean 0.6; warm-start means 0.7, 0.5: between = (0.1^2 + 0.1^2) / 2 = 0.01; within: each pair +-0.1:
    # 0.01; total 0.02: model.seed explains 50%, std between sqrt(0.01) = 10 points, within 10 points
    line = results.variance_split(cells["(common only)"], "model.seed")
    assert line.startswith("model.seed explains 50% of the variance of final accuracy (between model.seed values: std 10.0 points; "
                           "within: std 10.0)"), line
    assert "0: 70.0, 1: 50.0" in line
    # rollout seed: seed-0 means (0.6 + 0.4) / 2 = 0.5, seed-1 0.7: the same split here
    assert results.variance_split(cells["(common only)"], "seed").startswith("seed explains 50%")


def test_against_baseline_compares_every_cell_with_one(tmp_path, results):
    """--baseline variant=grpo: the variant comparison table (p-values, greedy at step 50, entropy, seconds per step)."""
    sweep = tmp_path / "sweep"
    for seed, (acc, ent) in enumerate([([0.5, 0.6, 0.7], 0.4), ([0.5, 0.7, 0.9], 0.6)]):
        fake_job(sweep / f"g{seed}", ["variant=grpo", f"seed={seed}"], acc)
        writer = SummaryWriter(str(sweep / f"g{seed}" / "tb"))
        for step in range(1, 101):  # a loss every step, 2 s apart (wall times given), and the entropy at the end
            writer.add_scalar("train/loss", 0.0, step, walltime=1000.0 + 2.0 * step)
        writer.add_scalar("train/entropy", ent, 100)
        writer.close()
    fake_job(sweep / "d0", ["variant=dapo", "seed=0"], [0.5, 0.65, 0.4])
    _, cells = results.collect([sweep])
    assert results.seconds_per_step(cells["variant=grpo"][0]) == pytest.approx(2.0)
    lines = results.against_baseline(cells, "variant=grpo").splitlines()
    cols = lambda line: [c.strip() for c in line.strip("|").split("|")]
    assert cols(lines[1]) == ["setting", "seeds", "greedy after", "p", "greedy at 50", "p", "maj@4 after", "entropy at end", "s / step"]
    # grpo: final 70, 90; at step 50: 60, 70; maj@4 after 35, 45; entropy mean(0.4, 0.6) = 0.5; 2 s per step
    assert cols(lines[3]) == ["variant=grpo", "2", "80.0 ± 14.1 [70.0, 90.0]", "-", "65.0 ± 7.1", "-", "40.0 ± 7.1", "0.500", "2.00"]
    # dapo against it: final 40 vs 70, 90 -> p = 1/3 (as in the test above); at 50: 65 vs 60, 70 -> difference 0, p = 1
    assert cols(lines[4]) == ["variant=dapo", "1", "40.0 ± 0.0 [40.0, 40.0]", "0.333", "65.0 ± 0.0", "1.000", "20.0 ± 0.0", "-", "-"]
    with pytest.raises(SystemExit, match=r"--baseline 'variant=nope' names no cells"):
        results.against_baseline(cells, "variant=nope")
    assert results.against_baseline(cells, "grpo") == results.against_baseline(cells, "variant=grpo")  # only its name has it


def test_several_updates_per_grpo_step_are_read_in_grpo_steps(tmp_path, results):
    """grpo.mu=2 with mini-batches: TensorBoard's x is the optimizer step (4 a GRPO step here, 2 on step 30, whose
    other groups were flat). Evaluations and seconds per step are read per GRPO step, not per optimizer step."""
    job = tmp_path / "sweep" / "j0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["variant=gspo", "seed=0"]))
    writer, x, evals = SummaryWriter(str(job / "tb")), 0, {}
    writer.add_scalar("val/accuracy", 0.5, 0)
    for step in range(1, 101):
        x += 2 if step == 30 else 4
        writer.add_scalar("rollout/reward_mean", 0.5, x - 1, walltime=1000.0 + 3.0 * step)  # logged on the step's last update
        writer.add_scalar("train/loss", 0.0, x - 1, walltime=1000.0 + 3.0 * step)
        if step in (50, 100):
            writer.add_scalar("val/accuracy", 0.6 if step == 50 else 0.8, x)  # after the step: x = updates done
            evals[step] = x
    writer.close()
    assert evals == {50: 198, 100: 398}  # not 200 / 400: the x of an evaluation is not 4 x its GRPO step
    _, cells = results.collect([tmp_path / "sweep"])
    (run,) = cells["(common only)"]  # one job: every override is common
    assert run["val/accuracy"] == [(0, 0.5), (50, pytest.approx(0.6)), (100, pytest.approx(0.8))]
    assert results.seconds_per_step(run) == pytest.approx(3.0)  # per GRPO step (per optimizer step it would be ~0.75)
    lines = results.against_baseline(cells, "(common only)").splitlines()
    assert [c.strip() for c in lines[3].strip("|").split("|")][4] == "60.0 ± 0.0"  # greedy at GRPO step 50


def test_plot_labels_cells_and_draws_each_seeds_band(tmp_path, results):
    pytest.importorskip("matplotlib")
    sweep = tmp_path / "sweep"
    fake_job(sweep / "0", ["supervision=outcome", "seed=0"], [0.5, 0.6, 0.7])
    fake_job(sweep / "1", ["supervision=outcome", "seed=1"], [0.5, 0.7, 0.9])
    fake_job(sweep / "2", ["supervision=process", "grpo.beta=0", "seed=0"], [0.4, 0.4, 0.3])
    _, cells = results.collect([sweep])
    out = tmp_path / "plot.png"
    drawn = results.plot(cells, out, labels={"supervision=process": "PRM", "supervision=outcome": "verifier"})
    assert out.stat().st_size > 0
    # labelled cells first, in the order given; a part of a cell's name that only it has names it; values in %
    assert [(label, steps) for label, steps, *_ in drawn] == [("PRM (n=1)", [0, 50, 100]), ("verifier (n=2)", [0, 50, 100])]
    assert [values for _, _, *values in drawn] == [
        [pytest.approx([40.0, 40.0, 30.0])] * 3,  # one seed: mean = lowest = highest
        [pytest.approx([50.0, 65.0, 80.0]), pytest.approx([50.0, 60.0, 70.0]), pytest.approx([50.0, 70.0, 90.0])]]
    # "supervision=outcome" is in both names; only one starts with it
    fake_job(sweep / "3", ["grpo.beta=0", "supervision=outcome", "seed=0"], [0.5, 0.5, 0.5])
    _, cells = results.collect([sweep])
    assert results.cell_named(cells, "supervision=outcome") == "supervision=outcome"
    assert results.cell_named(cells, "supervision=out") == "supervision=outcome"  # in both names, starts only this one
    assert results.cell_named(cells, "grpo.beta=0 supervision=o") == "grpo.beta=0 supervision=outcome"
    with pytest.raises(SystemExit, match=r"--label '=0 supervision=' names 2 cells"):  # and neither name starts with it
        results.plot(cells, out, labels={"=0 supervision=": "x"})
    with pytest.raises(SystemExit, match=r"--label 'rloo' names no cells"):
        results.plot(cells, out, labels={"rloo": "x"})
