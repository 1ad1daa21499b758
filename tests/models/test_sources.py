"""grpo.models.sources: TinyPolicy builds, warm-starts and caches; PretrainedPolicy loads a hub id or a
local directory (through the `model` config group), with a clear error when neither exists."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

import grpo.models.sources as sources
from grpo.models.sources import PretrainedPolicy, TinyPolicy, load_pretrained
from grpo.tasks import ArithmeticTask
from grpo.pipeline import warm_start_key
from grpo_testkit import compose_config

ARCH = dict(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_position_embeddings=64)
TINY = dict(arch=ARCH)


@pytest.fixture
def small_task() -> ArithmeticTask:
    return ArithmeticTask(train_size=100, heldout_size=10, seed=0)


@pytest.fixture
def counted_warm_start(monkeypatch):
    """Counts calls of train_warm_start made by TinyPolicy (the real one still runs)."""
    calls = []
    real = sources.train_warm_start

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(sources, "train_warm_start", counting)
    return calls


def test_tiny_policy_warm_starts_once_then_loads_from_cache(tmp_path, small_task, counted_warm_start):
    policy = TinyPolicy(**TINY, warmstart_steps=2, warmstart_batch_size=4, cache_dir=str(tmp_path))
    model, tokenizer = policy.load(small_task, task_key="arith")
    assert len(counted_warm_start) == 1 and counted_warm_start[0]["steps"] == 2
    path = policy.cache_path("arith")
    assert path.parent == tmp_path and (path / "config.json").is_file()
    assert not list(tmp_path.glob("*.tmp"))  # the atomic rename left no half-written folder
    stamp = {f.name: f.stat().st_mtime_ns for f in path.iterdir()}

    again, tokenizer2 = TinyPolicy(**TINY, warmstart_steps=2, warmstart_batch_size=4, cache_dir=str(tmp_path)).load(
        small_task, task_key="arith"
    )
    assert len(counted_warm_start) == 1  # not retrained
    assert {f.name: f.stat().st_mtime_ns for f in path.iterdir()} == stamp  # not rewritten
    for (name, p), q in zip(model.named_parameters(), again.parameters()):
        assert torch.equal(p, q), name
    assert tokenizer2.get_vocab() == tokenizer.get_vocab() and tokenizer2.padding_side == "left"
    assert model.config.vocab_size == len(tokenizer) and model.config.hidden_size == ARCH["hidden_size"]


def test_warm_start_trains_the_fresh_model(tmp_path, small_task):
    from grpo.models.tiny import TinyArch, build_tiny_model

    trained, tokenizer = TinyPolicy(**TINY, warmstart_steps=2, warmstart_batch_size=4, cache_dir=str(tmp_path)).load(small_task)
    untrained, _ = TinyPolicy(**TINY, warmstart_steps=0, cache_dir=str(tmp_path)).load(small_task)
    fresh = build_tiny_model(TinyArch(**ARCH).config(tokenizer), seed=0)
    assert all(torch.equal(p, q) for p, q in zip(untrained.parameters(), fresh.parameters()))  # steps=0: as built
    assert any(not torch.equal(p, q) for p, q in zip(trained.parameters(), fresh.parameters()))


def test_cache_key_follows_everything_that_shapes_the_model(tmp_path):
    base = TinyPolicy(**TINY, cache_dir=str(tmp_path))
    key = base.cache_path("task-a")
    assert TinyPolicy(**TINY, cache_dir=str(tmp_path)).cache_path("task-a") == key  # deterministic
    assert base.cache_path("task-b") != key
    assert TinyPolicy(arch={**ARCH, "hidden_size": 32}, cache_dir=str(tmp_path)).cache_path("task-a") != key
    assert TinyPolicy(arch={**ARCH, "family": "qwen2"}, cache_dir=str(tmp_path)).cache_path("task-a") != key
    assert TinyPolicy(**TINY, warmstart_steps=7, cache_dir=str(tmp_path)).cache_path("task-a") != key
    assert TinyPolicy(**TINY, seed=1, cache_dir=str(tmp_path)).cache_path("task-a") != key


def test_cache_key_changes_with_task_settings(tmp_path):
    """The pipeline keys the cache by the task's config: another task setting gets its own warm start."""
    keys = {}
    for overrides in ([], ["task.seed=1"], ["task.num_ops_max=4"], ["task.flaw_prob=0.1"]):
        cfg = compose_config(overrides + [f"model.cache_dir={tmp_path}"], output_dir=tmp_path / "run")
        policy = instantiate(cfg.model)
        keys[tuple(overrides)] = policy.cache_path(warm_start_key(cfg))
    assert len(set(keys.values())) == len(keys)
    cfg = compose_config([f"model.cache_dir={tmp_path}"], output_dir=tmp_path / "run")
    assert instantiate(cfg.model).cache_path(warm_start_key(cfg)) == keys[()]


def test_another_task_key_builds_another_cache(tmp_path, small_task, counted_warm_start):
    policy = TinyPolicy(**TINY, warmstart_steps=1, warmstart_batch_size=2, cache_dir=str(tmp_path))
    policy.load(small_task, task_key="a")
    policy.load(small_task, task_key="b")
    policy.load(small_task, task_key="a")
    assert len(counted_warm_start) == 2
    assert policy.cache_path("a").is_dir() and policy.cache_path("b").is_dir()


def test_hf_model_group_loads_a_local_directory(saved_tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = compose_config(["model=hf", f"model.name_or_path={saved_tiny_model}"], output_dir=tmp_path)
    source = instantiate(cfg.model)
    assert isinstance(source, PretrainedPolicy)
    model, tokenizer = source.load(ArithmeticTask(train_size=10, heldout_size=2))
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None

    reference = AutoModelForCausalLM.from_pretrained(saved_tiny_model).eval()
    ref_tok = AutoTokenizer.from_pretrained(saved_tiny_model)
    prompts = ["Q:7*3+12-5=", "Q:1+2="]
    enc = tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
    assert enc.input_ids.equal(ref_tok(prompts, padding=True, return_tensors="pt", add_special_tokens=False).input_ids)
    with torch.no_grad():
        got = model.eval()(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits
        want = reference(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_hf_dtype_is_applied(saved_tiny_model):
    model, _ = load_pretrained(str(saved_tiny_model), dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize("where", ["missing", "empty"])
def test_missing_model_gives_clear_error(tmp_path, where):
    path = tmp_path / where
    if where == "empty":
        path.mkdir()
    with pytest.raises(ValueError, match=r"model\.name_or_path") as err:
        PretrainedPolicy(str(path)).load(task=None)
    assert str(path) in str(err.value)
