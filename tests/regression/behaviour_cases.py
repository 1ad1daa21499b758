"""Behaviour kept on purpose: small GRPO runs whose trained parameters and per-step metrics are recorded
in reference.json, so that a change that moves them is seen (and re-recorded only on purpose).

    python tests/regression/behaviour_cases.py --record              # rewrite reference.json (a minute or two)
    python tests/regression/behaviour_cases.py --compare [CASE ...]  # what differs from it, case by case
    python tests/regression/behaviour_cases.py --record-start        # rewrite start/ (only when the tiny model,
                                                                     # task alphabet or tokenizer change), then --record

Each case runs 3 GRPO steps, with settings under which the policy really moves (a warm start that is right
some of the time, lr 1e-3), and records:
- every per-step `rollout/*`, `train/*` and `rm/*` metric (timings left out), and
- a fingerprint of every trained parameter tensor: its sum and 32 strided values.

The same on any machine torch supports: the cases start from a policy stored here (start/: debug=default's tiny
model after its 300-step warm start, 0.1M parameters), not from a warm start rebuilt at test time (300 steps of
training amplify the last-bit differences between CPU kernel paths, AVX2 / AVX-512 / ARM and MKL's own dispatch,
into parameters ~0.1 apart between AVX2 and AVX-512 kernels here, even with the model in float64: a different
model), and run in float64 (model=hf model.dtype=float64; the reward
model too). What remains is the float32 math the code and transformers do on purpose (sampling probabilities,
log-probs, the loss, RMSNorm, rotary tables): measured across kernel paths, see PARAMETER_TOL and METRIC_TOL.
Behaviour changes show far above them: e.g. grpo.beta 0.04 -> 0.041 moves train/grad_norm by 8e-5 (relative).

History: recorded first from main at e864651 (the redesign of issue 11 had to keep it); re-recorded on purpose
for issue 13 (token / constant aggregation normalisers) and issue 19 (a stored start, run in float64). Re-recorded
on purpose after issue 19 item 2 (with beta > 0 flat groups keep their KL term: with that line reverted,
outcome_verifier and outcome_mu2_token_k2 reproduce the previous entries exactly) and issue 20 (a stopped
row's last step ends on its EOS; the reward model sees EOS and endings; Monte-Carlo labels end after the
separator). Issue 21 added the rollout/mismatch/* entries (the sampler's log-probs against the trainer's: 1 and 0
here, float64) and changed nothing recorded before (entries added, none rewritten).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from lightning.pytorch.loggers import Logger

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "reference.json"
START_DIR = HERE / "start"  # the cases' starting policy, a file: the same on every machine (see record_start)

# The starting policy in START_DIR: debug=default's tiny model and warm start (greedy ~8%, pass@4 ~30% on the easy
# task), written by `record_start`.
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
RM = ["reward=model", "reward.dtype=float64", "reward.initial_prompts=32", "reward.samples_per_prompt=4", "reward.initial_steps=20",
      "grpo.scale_rewards=true"]  # recorded with the group std, the default before reward=model chose batch
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

# Tolerances, measured: the largest difference between kernel paths of one machine (AMD EPYC, AVX-512), each path
# against ATEN_CPU_CAPABILITY unset (AVX-512), over the 6 cases: avx2 4.0e-7 (parameters) / 1.1e-6 (metrics),
# default 9.6e-7 / 1.1e-6, MKL_ENABLE_INSTRUCTIONS=AVX2 6.4e-10 / 3.7e-9 (the largest in
# outcome_iterative_gspo_constant, whose epsilon 0.01 puts tokens near the clip edge). About 10x that:
PARAMETER_TOL = 1e-5  # absolute, on each fingerprinted value (parameters are O(0.01-1)); the sum: x 100 x its size
METRIC_TOL = 1e-5     # relative (absolute below 1): the metrics are float32 statistics (loss, ratios, entropy)


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


def record_start(cache: Path) -> None:
    """Rewrite START_DIR: debug=default's warm-started tiny policy (model=tiny under START's settings, built and
    warm-started on this machine in float32), saved in float32. Only needed when the tiny model, the task's
    alphabet or the tokenizer change; the cases then need --record too."""
    sys.path.insert(0, str(HERE.parent))
    from grpo_testkit import compose_config
    from grpo.pipeline import load_policy

    _, policy, tokenizer = load_policy(compose_config(START + [f"model.cache_dir={cache}"], output_dir=cache / "compose"))
    policy.save_pretrained(START_DIR)
    tokenizer.save_pretrained(START_DIR)


def run_case(name: str, cache: Path, out: Path) -> dict:
    """Build the run as train.py does from START_DIR in float64, fit 3 GRPO steps, return its metrics and parameter
    fingerprint."""
    sys.path.insert(0, str(HERE.parent))
    from grpo_testkit import compose_config
    from grpo.pipeline import build

    overrides = COMMON + CASES[name] + [f"model.name_or_path={START_DIR}", f"model.cache_dir={cache}", "seed=0"]
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
    if "--record-start" in sys.argv:
        record_start(root / "cache")
        print(f"wrote {START_DIR}; now re-record the cases: python {__file__} --record")
    elif "--record" in sys.argv:
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
