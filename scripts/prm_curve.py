"""A reward model's held-out judgement while it trains: is it limited by training steps or by data?

    .venv/bin/python scripts/prm_curve.py outputs/cache/reward-prm-<hash> model.seed=1     # trailing: config overrides
    .venv/bin/python scripts/prm_curve.py outputs/cache/reward-prm-<hash> --steps 6000 --every 500 --lr 1e-3 model.seed=1
    .venv/bin/python scripts/prm_curve.py outputs/cache/reward-prm-<hash> --implicit-beta 0.05 model.seed=1   # an implicit PRM

The directory is a cached initial reward model (`python train.py reward=model ...` writes one under
reward.cache_dir; its examples.json holds the samples it was trained on and those of the questions it kept out).
A fresh reward model is trained on the same training samples (started from the policy's weights, as
reward.init_from_policy=true does; --scratch: the cached model's architecture, fresh weights) and every --every steps
the script prints the training loss (mean since the last line) and held-out AUROC and accuracy against the cached
labels, and, where the task has an exact step checker (task=arithmetic: `task.step_rewards`), against the checker's
step labels and its prefix labels (every step so far right, what Monte-Carlo labels estimate). The overrides must
name the policy the reward model was built for (the same model.* settings as the run), since it is the starting
point and the policy's tokenizer reads the samples.

How to read it: a held-out AUROC that peaks and then falls while the loss keeps falling is a model memorising its
questions; more steps will not help, more questions (reward.initial_prompts) may. One that still rises at the end
wants more steps (reward.initial_steps).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from transformers import AutoConfig, AutoModelForTokenClassification

import grpo.quiet  # noqa: F401  (third-party tips)
from grpo.pipeline import load_policy
from grpo.rewards.learned.data import RMExample, checker_labels
from grpo.rewards.learned.network import build_reward_model
from grpo.rewards.learned.training import evaluate_reward_model, train_reward_model

REPO = Path(__file__).resolve().parents[1]


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reward_dir", type=Path, help="a cached reward model: a directory holding examples.json")
    p.add_argument("--steps", type=int, default=3000, help="training steps")
    p.add_argument("--every", type=int, default=500, help="evaluate every this many steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scratch", action="store_true", help="fresh weights of the cached model's architecture")
    p.add_argument("--implicit-beta", type=float, default=None,
                   help="train an implicit PRM with this beta instead (reward.implicit_beta; from the policy's weights)")
    p.add_argument("--json", type=Path, help="write the curve here")
    p.add_argument("overrides", nargs="*", help="config overrides naming the policy (e.g. model.seed=1)")
    args = p.parse_intermixed_args(argv)
    if not (args.reward_dir / "examples.json").is_file():
        p.error(f"{args.reward_dir} holds no examples.json: pass a directory `python train.py reward=model ...` cached "
                "under reward.cache_dir (outputs/cache/reward-orm-* or reward-prm-*)")
    if args.implicit_beta is not None and (args.scratch or not args.implicit_beta > 0):
        p.error("--implicit-beta wants a number > 0 and starts from the policy's weights (not with --scratch)")
    if args.every < 1 or args.steps < 1:
        p.error("--steps and --every must be >= 1")
    return args


def checker_truth(task, examples: list[RMExample]) -> dict[str, list[RMExample]]:
    """{"checker": the examples' steps labelled by task.step_rewards, "prefix": 1 iff every step so far is right};
    only steps whose end the checker and the examples share; {} for a task without a step checker."""
    if not callable(getattr(task, "step_rewards", None)):
        return {}
    problems = {p.prompt: p for p in task.train_problems()}
    own, prefix = [], []
    for e in examples:
        if e.prompt not in problems:
            raise ValueError(f"the cached sample's question {e.prompt!r} is not among the task's training questions: "
                             "the overrides must name the task (and prompt format) the reward model was built with")
        labels, prefix_labels = checker_labels(task, problems[e.prompt], e.completion)
        for table, out in ((labels, own), (prefix_labels, prefix)):
            targets = tuple((c, table[c]) for c, _ in e.targets if c in table)
            if targets:
                out.append(RMExample(e.prompt, e.completion, targets, e.ended))
    return {"checker": own, "prefix": prefix}


def main(argv=None) -> list[dict]:
    args = parse(argv)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=args.overrides)
    saved = json.loads((args.reward_dir / "examples.json").read_text())
    train = [RMExample.from_plain(e) for e in saved["train"]]
    heldout = [RMExample.from_plain(e) for e in saved["heldout"]]
    if not train or not heldout:
        raise SystemExit(f"{args.reward_dir}/examples.json holds {len(train)} training and {len(heldout)} held-out samples: "
                         "the curve needs both (a reward model built with reward.heldout_fraction > 0)")
    task, policy, tokenizer = load_policy(cfg)
    truth = {"labels": heldout, **checker_truth(task, heldout)}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.scratch:
        config = AutoConfig.from_pretrained(args.reward_dir)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            model = AutoModelForTokenClassification.from_config(config)
    else:
        model = build_reward_model(tokenizer, init_from=policy, seed=args.seed, implicit_beta=args.implicit_beta)
    model = model.to(device)
    print(f"{len(train)} training samples, {len(heldout)} held out ({len(set(e.prompt for e in heldout))} questions); "
          f"cached model's held-out metrics: {saved.get('metrics')}")
    print("  step    loss  " + "  ".join(f"AUROC({k})  acc({k})" for k in truth))
    curve, losses = [], []

    def report(step: int, loss: float | None) -> None:
        if loss is not None:
            losses.append(loss)
        if step % args.every and step != args.steps:
            return
        metrics = {k: evaluate_reward_model(model, tokenizer, v) for k, v in truth.items() if v}
        mean_loss = sum(losses) / len(losses) if losses else float("nan")
        losses.clear()
        curve.append({"step": step, "loss": mean_loss, **metrics})
        cells = "  ".join(f"{m['auroc']:>{7 + len(k)}.3f}  {m['accuracy']:>{5 + len(k)}.3f}" for k, m in metrics.items())
        print(f"{step:6d}  {mean_loss:6.3f}  {cells}", flush=True)

    report(0, None)
    train_reward_model(model, tokenizer, train, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       drop_last=False, progress=False, on_step=report)
    best = max(curve, key=lambda row: -1.0 if math.isnan(row["labels"]["auroc"]) else row["labels"]["auroc"])
    print(f"best held-out AUROC (labels) {best['labels']['auroc']:.3f} at step {best['step']}; last "
          f"{curve[-1]['labels']['auroc']:.3f} at step {curve[-1]['step']}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "curve": curve}, indent=2))
    return curve


if __name__ == "__main__":
    main()
