"""adapter=lora: pi_ref is the base model (adapters off, no copy), only adapter weights train, the export merges
them into a plain transformers checkpoint (and writes the adapter alone in peft's format), resume is exact;
gradient checkpointing and bf16-mixed run the same GRPO step."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from grpo.models.adapters import LoRA, adapters_disabled, fold_adapters, lora_layers, merge_lora_state, reference_model
from grpo.pipeline import build, run, warm_start_key
from grpo.rollout.engine import KVCacheEngine, sample_texts
from grpo.rollout.logprobs import completion_logprobs
from grpo.strategies.weights import export_pretrained
from grpo_testkit import compose_config, cpu_bf16_attention_error, read_scalars, tiny_lm

SIGNAL = ["reward._target_=grpo_testkit.DigitShareReward", "eval.every_n_steps=100", "eval.prompts=4", "eval.batch_size=4",
          "eval.k_prompts=2", "sampling.max_new_tokens=16"]
LORA = ["adapter=lora", "adapter.r=4", "adapter.alpha=8"]


def warm_start_dir(cfg):
    from hydra.utils import instantiate

    return instantiate(cfg.model).cache_path(warm_start_key(cfg))


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_merge_of_a_hand_worked_adapter():
    """W' = W + s B A with s = alpha / r; bias renamed; adapter entries dropped."""
    state = {
        "q.base_layer.weight": torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
        "q.base_layer.bias": torch.tensor([0.5, -0.5]),
        "q.lora_A.default.weight": torch.tensor([[1.0, 2.0]]),  # [r=1, in=2]
        "q.lora_B.default.weight": torch.tensor([[3.0], [0.0]]),  # [out=2, r=1]
        "embed.weight": torch.ones(3, 2),
    }
    merged = merge_lora_state(state, scaling=2.0)
    assert set(merged) == {"q.weight", "q.bias", "embed.weight"}
    torch.testing.assert_close(merged["q.weight"], torch.tensor([[7.0, 12.0], [0.0, 1.0]]))  # + 2 * [[3, 6], [0, 0]]
    torch.testing.assert_close(merged["q.bias"], torch.tensor([0.5, -0.5]))


def test_reference_is_the_base_model_and_fold_makes_it_the_policy():
    base, _ = tiny_lm(seed=1)
    ids = torch.randint(4, 20, (3, 12))
    expected = logits(base, ids)
    policy = LoRA(r=4, alpha=8).apply(tiny_lm(seed=1)[0])
    assert all(("lora_" in n) == p.requires_grad for n, p in policy.named_parameters())  # only adapters train
    for layer in lora_layers(policy):  # a trained adapter: B no longer 0
        torch.nn.init.normal_(layer.lora_B["default"].weight)
    tuned = logits(policy, ids)
    assert not torch.allclose(tuned, expected, atol=1e-3)
    from grpo.models.adapters import AdapterFree

    with reference_model(AdapterFree(policy)) as ref:
        torch.testing.assert_close(logits(ref, ids), expected)  # pi_ref: the base model, exactly
    torch.testing.assert_close(logits(policy, ids), tuned)  # adapters back on after the context
    fold_adapters(policy, seed=3)  # pi_ref <- pi_theta (rm_schedule=iterative)
    torch.testing.assert_close(logits(policy, ids), tuned, rtol=1e-4, atol=1e-5)
    with adapters_disabled(policy):
        torch.testing.assert_close(logits(policy, ids), tuned, rtol=1e-4, atol=1e-5)


def test_fold_draws_the_new_adapters_from_its_seed_alone():
    """Two replicas (ranks) whose global random state differs fold with the same seed: the same re-drawn A."""
    def folded(seed, noise):
        policy = LoRA(r=4, alpha=8).apply(tiny_lm(seed=1)[0])
        torch.rand(noise)  # whatever else used the global random state before, a different amount per replica
        fold_adapters(policy, seed=seed)
        return {k: v for k, v in policy.state_dict().items() if ".lora_A." in k}

    a, b, c = folded(7, 1), folded(7, 5), folded(8, 1)
    assert a.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)  # another seed, another draw (a new iteration's)


@pytest.fixture(scope="module")
def lora_fit(base_overrides, tmp_path_factory):
    """A 2-step LoRA run (build + fit), the policy's weights before and after."""
    out = tmp_path_factory.mktemp("lora")
    cfg = compose_config(base_overrides + SIGNAL + LORA, output_dir=out)
    module, datamodule, trainer = build(cfg)
    before = {k: v.clone() for k, v in module.policy.state_dict().items()}
    trainer.fit(module, datamodule=datamodule)
    return cfg, module, before, out


def test_only_adapter_weights_change_and_reference_log_probs_are_the_base_model_s(lora_fit):
    cfg, module, before, _ = lora_fit
    after = module.policy.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all(".lora_" in k for k in changed), changed
    assert any(".lora_B." in k for k in changed)
    assert module.reference is not None and not isinstance(module.reference, torch.nn.Module)  # no second copy
    base = AutoModelForCausalLM.from_pretrained(str(warm_start_dir(cfg)))
    batch = module.last_rollout.batch
    T = batch.completion_mask.shape[1]
    expected, _ = completion_logprobs(base, batch.input_ids, batch.attention_mask, T)
    mask = batch.completion_mask | batch.attention_mask[:, -T:].bool()
    torch.testing.assert_close(batch.ref_logp[mask], expected[mask], rtol=1e-5, atol=1e-5)  # the rollout's pi_ref


def test_merged_export_loads_in_transformers_with_the_trained_greedy_outputs(lora_fit, tmp_path):
    cfg, module, _, _ = lora_fit
    module.lora.save_adapter = True
    export_pretrained(module.policy, module.tokenizer, tmp_path, True, lora=module.lora)
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path))
    assert not any("lora" in k for k in merged.state_dict())
    ids = module.last_rollout.batch.input_ids[:4]
    module.policy.eval()
    torch.testing.assert_close(logits(merged, ids), logits(module.policy, ids), rtol=1e-4, atol=1e-4)
    problems = module.task.heldout_problems()[:6]
    greedy = lambda model: sample_texts(_engine(model), module.tokenizer, problems, device="cpu", temperature=0.0)  # noqa: E731
    assert greedy(merged) == greedy(module.policy)
    adapter_only = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(warm_start_dir(cfg))), str(tmp_path / "adapter"))
    torch.testing.assert_close(logits(adapter_only, ids), logits(module.policy, ids), rtol=1e-4, atol=1e-4)


def _engine(model):
    engine = KVCacheEngine(max_new_tokens=16)
    engine.load_weights(model)
    return engine


RESUME = SIGNAL + LORA + ["grpo.minibatch_prompts=2", "grpo.mu=2", "callbacks.model_checkpoint.every_n_epochs=1",
                          "callbacks.model_checkpoint.save_top_k=-1"]


@pytest.mark.slow
def test_resume_with_lora_is_exact(base_overrides, tmp_path):
    full, part, resumed = tmp_path / "full", tmp_path / "part", tmp_path / "resumed"
    run(compose_config(base_overrides + RESUME + ["grpo.steps=3"], output_dir=full))
    run(compose_config(base_overrides + RESUME + ["grpo.steps=2"], output_dir=part))
    run(compose_config(base_overrides + RESUME + ["grpo.steps=3", f"ckpt_path={part / 'checkpoints' / 'last.ckpt'}"], output_dir=resumed))
    a, b = read_scalars(full / "tb"), read_scalars(resumed / "tb")
    assert max(b["train/loss"]) == pytest.approx(max(a["train/loss"]), rel=1e-5, abs=1e-7)
    pa, pb, pp = (AutoModelForCausalLM.from_pretrained(str(d / "export")).state_dict() for d in (full, resumed, part))
    for name in pa:
        torch.testing.assert_close(pb[name], pa[name], rtol=1e-6, atol=1e-7)
    assert any(not torch.equal(pp[name], pa[name]) for name in pa)  # the third step moved the weights


class LayerCalls:
    """Forward calls of the policy's decoder layers during its updates: those of each update's forward
    (training_step) and those inside its backward (recomputed by gradient checkpointing). Counted by wrapping each
    layer's MLP `forward`: transformers checkpoints a layer's `forward` inside the layer's hooks, and module hooks
    do not fire in the recompute, so a hook would count nothing there."""

    def __init__(self, module):
        self.calls = self.forward = self.recomputed = self.updates = 0
        self.layers = len(module.policy.model.layers)
        for layer in module.policy.model.layers:
            layer.mlp.forward = self._counting(layer.mlp.forward)
        step = module.training_step

        def counted_step(batch, batch_idx):
            before = self.calls
            out = step(batch, batch_idx)
            self.forward += self.calls - before
            self.updates += 1
            return out

        module.training_step = counted_step
        module.on_before_backward = lambda loss: setattr(self, "_mark", self.calls)
        module.on_after_backward = lambda: setattr(self, "recomputed", self.recomputed + self.calls - self._mark)

    def _counting(self, forward):
        def counted(*args, **kwargs):
            self.calls += 1
            return forward(*args, **kwargs)

        return counted


def fit_counting_layers(overrides, out):
    """A 1-step run built as train.py builds it: (policy weights after, LayerCalls of its update)."""
    module, datamodule, trainer = build(compose_config(overrides + ["grpo.steps=1"], output_dir=out))
    calls = LayerCalls(module)
    trainer.fit(module, datamodule=datamodule)
    return module.policy.state_dict(), calls


@pytest.mark.parametrize("adapter", [[], LORA], ids=["full", "lora"])
def test_gradient_checkpointing_recomputes_and_gives_the_same_update(base_overrides, tmp_path, adapter):
    """model.gradient_checkpointing=true in a run: every decoder layer runs its forward once more in the update's
    backward (recomputed activations), and the update is the same as without it."""
    plain, off = fit_counting_layers(base_overrides + SIGNAL + adapter, tmp_path / "a")
    checkpointed, on = fit_counting_layers(base_overrides + SIGNAL + adapter + ["model.gradient_checkpointing=true"], tmp_path / "b")
    assert off.updates == on.updates == 1 and off.forward == on.forward == off.layers == 2  # debug=default: 2 layers
    assert off.recomputed == 0
    assert on.recomputed == on.layers * on.updates  # one recomputed forward per layer and update
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-6)


def fit_recording_update_dtypes(overrides, out):
    """A 1-step run built as train.py builds it: (weights before, after, the dtypes of the LM head's outputs in its update)."""
    module, datamodule, trainer = build(compose_config(overrides + ["grpo.steps=1"], output_dir=out))
    before = {k: v.clone() for k, v in module.policy.state_dict().items()}
    dtypes, in_update = set(), [False]
    module.policy.lm_head.register_forward_hook(lambda m, i, output: dtypes.add(output.dtype) if in_update[0] else None)
    step = module.training_step

    def recorded_step(batch, batch_idx):
        in_update[0] = True
        try:
            return step(batch, batch_idx)
        finally:
            in_update[0] = False

    module.training_step = recorded_step
    trainer.fit(module, datamodule=datamodule)
    return before, module.policy.state_dict(), dtypes, trainer.callback_metrics


@pytest.mark.parametrize("adapter", [[], LORA], ids=["full", "lora"])
def test_bf16_mixed_runs_the_update_in_bfloat16(base_overrides, tmp_path, adapter):
    """trainer.precision=bf16-mixed: the update computes in bfloat16 (autocast), the weights stay float32, and its step
    goes the float32 step's way without being it."""
    if cpu_bf16_attention_error():
        pytest.skip(cpu_bf16_attention_error())
    start, fp32, fp32_dtypes, _ = fit_recording_update_dtypes(base_overrides + SIGNAL + adapter, tmp_path / "a")
    _, bf16, bf16_dtypes, metrics = fit_recording_update_dtypes(base_overrides + SIGNAL + adapter + ["trainer.precision=bf16-mixed"], tmp_path / "b")
    assert fp32_dtypes == {torch.float32} and bf16_dtypes == {torch.bfloat16}
    assert all(v.dtype == torch.float32 for v in bf16.values())
    assert torch.isfinite(metrics["train/loss"]) and metrics["train/grad_norm"] > 0
    step_fp32 = torch.cat([(fp32[k] - start[k]).flatten() for k in start])
    step_bf16 = torch.cat([(bf16[k] - start[k]).flatten() for k in start])
    assert not torch.equal(step_bf16, step_fp32)  # bfloat16 rounding changed the gradients
    assert torch.nn.functional.cosine_similarity(step_bf16, step_fp32, dim=0) > 0.5  # yet the same update, roughly


def test_bad_lora_settings_are_named():
    with pytest.raises(ValueError, match="adapter.r=0"):
        LoRA(r=0)
    with pytest.raises(ValueError, match="adapter.target_modules=.*matches no layer"):
        LoRA(target_modules=["no_such_proj"]).apply(tiny_lm()[0])
