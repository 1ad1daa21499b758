"""grpo.job_dirname: a sweep job's folder name within the file system's limit, still telling jobs apart."""

from __future__ import annotations

from omegaconf import OmegaConf

from grpo.job_dirname import MAX_BYTES, job_dirname, register


def test_a_short_name_is_hydras_own():
    assert job_dirname(3, "grpo.beta:0.04+grpo.group_size:4") == "3_grpo.beta:0.04+grpo.group_size:4"


def test_a_long_name_is_cut_and_hashed_apart():
    a = "+".join(f"grpo.setting_{i}:{i}" for i in range(40))  # ~700 bytes
    b = a.replace("setting_39:39", "setting_39:38")  # differs only after the cut
    name_a, name_b = job_dirname(0, a), job_dirname(0, b)
    assert len(name_a.encode()) <= MAX_BYTES and name_a.startswith("0_grpo.setting_0:0+") and "+hash:" in name_a
    assert name_a != name_b and name_a == job_dirname(0, a)


def test_multibyte_characters_are_not_split():
    name = job_dirname(1, "é" * 300)
    assert len(name.encode()) <= MAX_BYTES and name.encode().decode() == name


def test_the_config_resolves_it():
    register()
    register()  # twice is fine
    cfg = OmegaConf.create({"num": 2, "dirname": "x:" + "y" * 300, "subdir": "${grpo_job_dirname:${num},${dirname}}"})
    assert cfg.subdir == job_dirname(2, "x:" + "y" * 300) and len(cfg.subdir.encode()) <= MAX_BYTES
