"""Behaviour kept on purpose: small GRPO runs whose trained parameters and per-step metrics are recorded
in reference.json, so that a change that moves them is seen (and re-recorded only on purpose).

    python tests/regression/behaviour_cases.py --record              # rewrite reference.json (a minute or two)
    python tests/regression/behaviour_cases.py --compare [CASE ...]  # what differs from it, case by case

Each case runs 3 GRPO steps, with settings under which the policy really moves (a warm start that is right
some of the time, lr 1e-3), and records:
- every per-step `rollout/*`, `train/*` and `rm/*` metric (timings left out), and
- a fingerprint of every trained parameter tensor: its sum and 32 strided values.

The same on any machine torch supports: the starting policy is debug=default's tiny model and 300-step warm
start, built and trained here in float64 (`float64_start`), and the cases run it in float64 (model=hf,
model.dtype=float64; the reward model too). A 300-step warm start in float32 amplifies the last-bit
differences between CPU kernel paths (AVX2 / AVX-512 / ARM, MKL's own dispatch) into a different model; in
float64 they stay near 1e-16 and the runs stay the same run. What remains is the float32 math the code does
on purpose (sampling probabilities, log-probs and the loss are computed in float32): measured across kernel
paths on one machine (ATEN_CPU_CAPABILITY=default / avx2 / avx512, MKL_ENABLE_INSTRUCTIONS=AVX2), see
PARAMETER_TOL and METRIC_TOL. A change of behaviour moves parameters by ~lr x (a gradient change) >> those.

History: recorded first from main at e864651 (the redesign of issue 11 had to keep it); re-recorded on purpose
for issue 13 (token / constant aggregation normalisers) and issue 19 (float64 start, machine-independent).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from lightning.pytorch.loggers import Logger

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "reference.json"

# The starting policy: debug=default's tiny model and warm start (greedy ~8%, pass@4 ~30% on the easy task),
# built in float64 by `float64_start`.
TASK = ["task.num_ops_min=1", "task.num_ops_max=2", "task.max_operand=20", "task.train_size=5000", "task.heldout_size=200"]
START = TASK + [
    "model.arch.hidden_size=64", "model.arch.num_layers=2", "model.arch.intermediate_size=256",
    "warmstart.steps=300", "warmstart.lr=5e-3", "warmstart.batch_size=64",
]
COMMON = TASK + [
    "model=hf", "model.dtype=float64",
    "grpo.steps=3", "grpo.group_size=4", "grpo.prompts_per_step=8", "sampling.max_new_tokens=32",
    "optimizer.lr=1e-3", "eval.every_n_steps=100", "eval.prompts=16", "eval.batch_size=16", "eval.k=2", "eval.k_prompts=4",
]
RM = ["reward=model", "reward.dtype=float64", "reward.initial_prompts=32", "reward.samples_per_prompt=4", "reward.initial_steps=20"]
ITERATIVE = ["rm_schedule=iterative", "rm_schedule.rm_steps=5", "rm_schedule.eval_samples=8", "rm_schedule.rm_batch_size=16"]
CASES = {
    "outcome_verifier": [],
    "process_verifier": ["supervision=process"],
    "outcome_mu2_token_k2": ["grpo.mu=2", "grpo.minibatch_prompts=4", "grpo.aggregation=token", "kl=k2", "grpo.epsilon_high=0.3"],
    "outcome_orm": RM,
    "process_prm_iterative": RM + ITERATIVE + ["supervision=process", "rm_schedule.steps_per_iteration=2"],
    "outcome_iterative_gspo_constant": ITERATIVE + [
        "rm_schedule.steps_per_iteration=1", "grpo.mu=2", "grpo.ratio_level=sequence",
        "grpo.epsilon=0.01", "grpo.aggregation=constant", "kl=k1",
    ],
}
KEEP = ("rollout/", "train/", "rm/")
TIMINGS = ("time_s", "tokens_per_s")

# Tolerances, measured: the largest difference between kernel paths of this machine (AMD EPYC, AVX-512;
# ATEN_CPU_CAPABILITY=default / avx2 / avx512 and MKL_ENABLE_INSTRUCTIONS=AVX2) over all cases, times ~100.
PARAMETER_TOL = 1e-9  # absolute, on each fingerprinted value (parameters are O(0.01-1)); the sum: x tensor size
METRIC_TOL = 1e-6     # relative (absolute below 1): metrics are float32 statistics (loss, ratios, entropy)


class RecordingLogger(Logger):
    """Keeps every logged scalar in memory: {name: {step: value}}."""

    def __init__(self):
        super().__init__()
        self.metrics: dict[str, dict[int, float]] = {}

    @property
    def name(self):
        return "recording"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        for key, value in metrics.items():
            if key.startswith(KEEP) and not key.endswith(TIMINGS):
                self.metrics.setdefault(key, {})[int(step)] = float(value)


def fingerprint(model) -> dict[str, list[float]]:
    out = {}
    for name, p in model.named_parameters():
        flat = p.detach().double().reshape(-1).cpu()
        out[name] = [float(flat.sum())] + flat[:: max(1, flat.numel() // 32)][:32].tolist()
    return out


def float64_start(cache: Path) -> Path:
    """A directory holding the cases' starting policy: model=tiny's warm start under START's settings (the same
    model, task, prompt, seed and 300 supervised steps as debug=default), built and trained in float64."""
    sys.path.insert(0, str(HERE.parent))
    from grpo_testkit import compose_config
    from hydra.utils import instantiate
    from transformers.loss.loss_utils import LOSS_MAPPING

    from grpo.models.cache import build_once
    from grpo.pipeline import formatted_task, instantiate_task

    def build(out: Path) -> None:
        cfg = compose_config(START + [f"model.cache_dir={cache}"], output_dir=cache / "compose")
        source = instantiate(cfg.model)
        task = formatted_task(instantiate_task(cfg.task), instantiate(cfg.prompt), source)
        default, float32_loss = torch.get_default_dtype(), LOSS_MAPPING["ForCausalLM"]
        torch.set_default_dtype(torch.float64)  # the model is built (initialised) and trained in the default dtype
        LOSS_MAPPING["ForCausalLM"] = causal_lm_loss_in_float64
        try:
            source._build(task, out)  # what model=tiny caches, the weights saved in float64
        finally:
            torch.set_default_dtype(default)
            LOSS_MAPPING["ForCausalLM"] = float32_loss

    return build_once(Path(cache) / "start-float64", "config.json", build)


def causal_lm_loss_in_float64(logits, labels, vocab_size, num_items_in_batch=None, ignore_index=-100, **kwargs):
    """transformers' ForCausalLMLoss (the warm start's loss) without its cast of the logits to float32: with it, the
    float32 rounding of each step's gradient (kernel-dependent in its last bits) grows over 300 steps into
    parameters ~0.1 apart between AVX2 and AVX-512 kernels; in float64 they stay the same model.
    logits [B, L, V], labels [B, L] (-100 off the completion) -> mean cross-entropy of each token's successor."""
    targets = torch.nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]  # [B, L]: the next token
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab_size).double(), targets.reshape(-1).to(logits.device),
                                             ignore_index=ignore_index, reduction="sum")
    return loss / (num_items_in_batch if num_items_in_batch is not None else (targets != ignore_index).sum())


def run_case(name: str, cache: Path, out: Path) -> dict:
    """Build the run as train.py does from the float64 start, fit 3 GRPO steps, return its metrics and parameter
    fingerprint."""
    sys.path.insert(0, str(HERE.parent))
    from grpo_testkit import compose_config
    from grpo.pipeline import build

    overrides = COMMON + CASES[name] + [f"model.name_or_path={float64_start(cache)}", f"model.cache_dir={cache}", "seed=0"]
    if "reward=model" in overrides:
        overrides.append(f"reward.cache_dir={cache}")
    cfg = compose_config(overrides, output_dir=out)
    module, datamodule, trainer = build(cfg)
    recorder = RecordingLogger()
    trainer.loggers = [recorder]
    trainer.fit(module, datamodule=datamodule)
    return json.loads(json.dumps({"metrics": recorder.metrics, "parameters": fingerprint(module.policy)}))  # keys as in JSON


def compare(name: str, got: dict, want: dict) -> list[str]:
    """Differences between a case's run and its reference: every parameter value within PARAMETER_TOL, the same
    (metric, step) entries, each within METRIC_TOL (NaN matches NaN)."""
    problems = []
    for tensor in sorted(set(want["parameters"]) | set(got["parameters"])):
        new, ref = got["parameters"].get(tensor), want["parameters"].get(tensor)
        if new is None or ref is None:
            problems.append(f"{name}: parameter {tensor} {'missing' if new is None else 'not in the reference'}")
            continue
        diff = max(abs(a - b) for a, b in zip(new[1:], ref[1:]))
        if len(new) != len(ref) or diff > PARAMETER_TOL or abs(new[0] - ref[0]) > PARAMETER_TOL * 100 * max(1.0, abs(ref[0])):
            problems.append(f"{name}: parameter {tensor} differs by {diff:.2e} (sum {new[0]:.9f} vs {ref[0]:.9f})")
    for metric in sorted(set(want["metrics"]) | set(got["metrics"])):
        new, ref = got["metrics"].get(metric, {}), want["metrics"].get(metric, {})
        for step in sorted(set(new) | set(ref), key=int):
            a, b = new.get(step), ref.get(step)
            if a is None or b is None:
                problems.append(f"{name}: {metric} at step {step} {'missing' if a is None else 'not in the reference'}")
            elif not (abs(a - b) <= METRIC_TOL * max(1.0, abs(b)) or (a != a and b != b)):
                problems.append(f"{name}: {metric} at step {step}: {a} vs reference {b}")
    return problems


def largest_differences(got: dict, want: dict) -> tuple[float, float]:
    """(largest parameter difference, largest relative metric difference) between two runs of a case: how the
    tolerances above were measured (run --dump under each kernel path, then --spread on the dumps)."""
    params = max(max(abs(a - b) for a, b in zip(got["parameters"][t][1:], ref[1:])) for t, ref in want["parameters"].items())
    metrics = max(
        (abs(v - want["metrics"][m][s]) / max(1.0, abs(want["metrics"][m][s])) for m, series in got["metrics"].items()
         for s, v in series.items() if m in want["metrics"] and s in want["metrics"][m] and v == v), default=0.0,
    )
    return params, metrics


if __name__ == "__main__":
    import tempfile

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp())
    names = [a for a in sys.argv[1:] if a in CASES] or list(CASES)
    if "--record" in sys.argv:
        reference = {name: run_case(name, root / "cache", root / name) for name in CASES}
        REFERENCE.write_text(json.dumps(reference, indent=1, sort_keys=True))
        print(f"wrote {REFERENCE}: {', '.join(reference)}")
    elif "--compare" in sys.argv:
        reference = json.loads(REFERENCE.read_text())
        for name in names:
            found = compare(name, run_case(name, root / "cache", root / name), reference[name])
            print(name, "OK" if not found else "\n  " + "\n  ".join(found[:20]))
    elif "--dump" in sys.argv:  # --dump FILE [CASE ...]: the runs as JSON, to measure the spread across machines
        target = Path(sys.argv[sys.argv.index("--dump") + 1])
        target.write_text(json.dumps({name: run_case(name, root / "cache", root / name) for name in names}))
    elif "--spread" in sys.argv:  # --spread A.json B.json ...: largest differences of each dump from the first
        dumps = [json.loads(Path(a).read_text()) for a in sys.argv[sys.argv.index("--spread") + 1:]]
        for name in dumps[0]:
            print(name, [f"{p:.1e} / {m:.1e}" for p, m in (largest_differences(d[name], dumps[0][name]) for d in dumps[1:])])
    else:
        print(__doc__)
