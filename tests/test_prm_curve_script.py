"""scripts/prm_curve.py: a fresh reward model trained on a cached one's samples, evaluated along the way."""

from __future__ import annotations

import json

import pytest

from grpo.pipeline import build
from grpo_testkit import compose_config, load_script

PRM = ["reward=model", "supervision=process", "reward.initial_prompts=16", "reward.samples_per_prompt=2",
       "reward.initial_steps=2", "reward.heldout_fraction=0.5"]  # step_labels=checker: the cached labels are the checker's


@pytest.fixture(scope="module")
def prm_curve():
    return load_script("prm_curve")


@pytest.fixture(scope="module")
def cached_prm(base_overrides, tmp_path_factory):
    cache = tmp_path_factory.mktemp("rm_cache")
    build(compose_config(base_overrides + PRM + [f"reward.cache_dir={cache}"], output_dir=tmp_path_factory.mktemp("rm_run")))
    (path,) = [p for p in cache.iterdir() if p.name.startswith("reward-prm-") and (p / "examples.json").is_file()]
    return path


def test_curve_rows_and_checker_columns(prm_curve, cached_prm, base_overrides, tmp_path):
    out = tmp_path / "curve.json"
    curve = prm_curve.main([str(cached_prm), "--steps", "5", "--every", "2", "--lr", "1e-3", "--json", str(out)] + base_overrides)
    assert [row["step"] for row in curve] == [0, 2, 4, 5]  # the start, every 2 steps, and the last
    assert all(row["loss"] > 0 for row in curve[1:])
    saved = json.loads((cached_prm / "examples.json").read_text())
    for row in curve:
        # the cached labels are the checker's own: the two columns measure the same thing
        assert row["checker"] == row["labels"]
        # prefix labels: a step is right only if every step so far is: never more positives than the checker's
        assert row["prefix"]["positive_rate"] <= row["checker"]["positive_rate"]
    assert 0 < curve[0]["labels"]["positive_rate"] < 1 and len(saved["heldout"]) > 0
    assert curve[-1]["labels"] != curve[0]["labels"]  # the model trained between the first and the last row
    assert json.loads(out.read_text())["curve"] == json.loads(json.dumps(curve))

    # --scratch: the cached model's architecture with fresh weights, not the policy's: another starting point
    scratch = prm_curve.main([str(cached_prm), "--steps", "1", "--every", "1", "--scratch"] + base_overrides)
    assert [row["step"] for row in scratch] == [0, 1]
    assert scratch[0]["labels"]["auroc"] != curve[0]["labels"]["auroc"]

    # --implicit-beta: an implicit PRM from the policy's weights: every score 0.5 at the start (pi_phi = pi_ref), so
    # accuracy is the share of negatives; training moves it
    implicit = prm_curve.main([str(cached_prm), "--steps", "2", "--every", "2", "--lr", "1e-3", "--implicit-beta", "0.5"] + base_overrides)
    start = implicit[0]["labels"]
    assert start["accuracy"] == pytest.approx(1 - start["positive_rate"]) and start["auroc"] == pytest.approx(0.5)
    assert implicit[-1]["labels"] != start


def test_a_directory_without_examples_is_refused(prm_curve, tmp_path, capsys):
    with pytest.raises(SystemExit):
        prm_curve.main([str(tmp_path)])
    assert "holds no examples.json" in capsys.readouterr().err
    (tmp_path / "examples.json").write_text(json.dumps({"train": [["Q:1+2=", "1+2=3;A:3", [[4, 1.0]], True]], "heldout": []}))
    with pytest.raises(SystemExit, match="1 training and 0 held-out samples"):
        prm_curve.main([str(tmp_path)])
