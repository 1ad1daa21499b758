"""Monte-Carlo step labels (step_labels=mc) measured against the exact step checker of the arithmetic task.

    .venv/bin/python scripts/mc_labels.py                 # the measurement: tiny warm-started policy, task=arithmetic
    .venv/bin/python scripts/mc_labels.py --small         # minutes on a CPU: checks that the script runs
    .venv/bin/python scripts/mc_labels.py --json out.json task=arithmetic_lines steps=line   # trailing: config overrides

The policy is the config's (`python train.py` builds and caches the same warm start), the solutions are its samples
on training questions, and steps come from the config's `steps` segmenter (here steps=marker, ';'). It prints:

(a) agreement of MC hard labels (any of N continuations right) with the checker, for each N of --ns: with the
    checker's own labels (a step is right by itself) and with its prefix labels (every step so far right, which
    is what Monte-Carlo labels estimate: after a mistake the right answer is out of reach however right the
    later steps are). Only steps where the segmenter and the checker agree on the end are compared.
(b) held-out AUROC of PRMs trained on MC labels (N = the largest; soft and hard) and on checker labels, with
    equal data (the same solutions, split by question) and training; scored against the checker's labels and
    its prefix labels on held-out questions.
(c) the cost per N: continuations and generated tokens per labelled step, seconds per 1,000 labelled steps
    (sampling and verifying; identical prefixes are continued once).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import grpo.quiet  # noqa: F401  (third-party tips)
from grpo.pipeline import load_policy
from grpo.rewards.learned.data import RMExample, checker_labels, split_by_prompt
from grpo.rewards.learned.mc_labels import PolicyCompleter, monte_carlo_labels
from grpo.rewards.learned.network import build_reward_model
from grpo.rewards.learned.training import evaluate_reward_model, train_reward_model
from grpo.rollout.engine import KVCacheEngine, sample_texts

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(prompts=64, samples=2, ns=[1, 4], rm_steps=40)
SMALL_OVERRIDES = ["debug=default"]  # the tiny debug model and the easy task


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=256, help="training questions sampled")
    p.add_argument("--samples", type=int, default=4, help="policy samples (solutions) per question")
    p.add_argument("--ns", type=int, nargs="+", default=[1, 4, 16], help="continuations per step (N) to compare")
    p.add_argument("--max-steps", type=int, default=None, help="steps labelled per solution (default: all)")
    p.add_argument("--heldout", type=float, default=0.25, help="share of questions held out for the PRMs' AUROC")
    p.add_argument("--rm-steps", type=int, default=300, help="PRM training steps (each PRM)")
    p.add_argument("--rm-batch-size", type=int, default=32)
    p.add_argument("--rm-lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--small", action="store_true", help=f"{SMALL} on {SMALL_OVERRIDES}: a few minutes on a CPU")
    p.add_argument("--json", type=Path, help="write every figure here")
    p.add_argument("overrides", nargs="*", help="config overrides (default: steps=marker on task=arithmetic)")
    args = p.parse_args()
    if args.small:
        for key, value in SMALL.items():
            if getattr(args, key) == p.get_default(key):
                setattr(args, key, value)
    return args


def agreement(examples: list[RMExample], truth: dict) -> tuple[float, int]:
    """Share of steps (present in both) whose MC hard label (> 0) equals the truth's label; count compared."""
    pairs = [(float(y > 0), truth[(e.prompt, e.completion)][c]) for e in examples for c, y in e.targets
             if c in truth[(e.prompt, e.completion)]]
    return (sum(a == b for a, b in pairs) / len(pairs) if pairs else float("nan")), len(pairs)


def relabel(examples: list[RMExample], truth: dict) -> list[RMExample]:
    """The examples' steps (where the truth has them), labelled by the truth."""
    out = []
    for e in examples:
        labels = truth[(e.prompt, e.completion)]
        targets = tuple((c, labels[c]) for c, _ in e.targets if c in labels)
        if targets:
            out.append(RMExample(e.prompt, e.completion, targets))
    return out


def main() -> None:
    args = parse()
    overrides = (SMALL_OVERRIDES if args.small else []) + ["steps=marker", f"seed={args.seed}"] + args.overrides
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    torch.manual_seed(args.seed)
    segmenter = instantiate(cfg.steps)
    task, policy, tokenizer = load_policy(cfg)  # the warm start `python train.py` builds and caches
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    policy = policy.to(device).eval()
    s = cfg.sampling

    # the solutions: samples of the policy on training questions
    pool = task.train_problems()
    generator = torch.Generator().manual_seed(args.seed)
    picked = [pool[i] for i in torch.randperm(len(pool), generator=generator)[: args.prompts].tolist()]
    engine = KVCacheEngine(max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p)
    engine.load_weights(policy)
    sampling = torch.Generator(device=device).manual_seed(args.seed)
    problems, completions = [], []
    for start in range(0, len(picked), 64):
        chunk = picked[start : start + 64]
        completions += sample_texts(engine, tokenizer, chunk, device=device, num_samples=args.samples, generator=sampling)
        problems += [p for p in chunk for _ in range(args.samples)]
    own, prefix = {}, {}
    for p, c in zip(problems, completions):
        own[(p.prompt, c)], prefix[(p.prompt, c)] = checker_labels(task, p, c)
    solved = sum(task.verify(p, c) for p, c in zip(problems, completions)) / len(completions)
    print(f"{len(completions)} solutions of {len(picked)} questions (answer right: {solved:.1%}); steps by {segmenter!r}; "
          f"continuations: temperature {s.temperature}, <= {s.max_new_tokens} tokens; device {device}")

    # (a) + (c): labels for each N
    complete = PolicyCompleter(policy, tokenizer, max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p)
    results, labelled = {"n": {}}, {}
    print("\n   N   agree(checker)  agree(prefix)  steps  positive  continuations/step  tokens/step  s/1000 steps")
    for n in args.ns:
        examples, cost = monte_carlo_labels(task, problems, completions, segmenter, complete, n=n, max_steps=args.max_steps,
                                            soft=True, seed=args.seed * 1009 + n)
        labelled[n] = examples
        a_own, compared = agreement(examples, own)
        a_prefix, _ = agreement(examples, prefix)
        positive = sum(y > 0 for e in examples for _, y in e.targets) / max(cost.steps, 1)
        per_step = cost.per_step()
        results["n"][n] = {"agreement_checker": a_own, "agreement_prefix": a_prefix, "compared_steps": compared,
                           "positive_rate": positive, **vars(cost), **per_step}
        print(f"{n:4d}   {a_own:14.3f}  {a_prefix:13.3f}  {cost.steps:5d}  {positive:8.3f}  {per_step['continuations_per_step']:18.2f}"
              f"  {per_step['tokens_per_step']:11.1f}  {per_step['seconds_per_1000_steps']:12.1f}")

    # (b): PRMs at equal data: the same solutions and question split, the same training
    n = max(args.ns)
    mc_soft = labelled[n]
    mc_hard = [RMExample(e.prompt, e.completion, tuple((c, float(y > 0)) for c, y in e.targets)) for e in mc_soft]
    checker = relabel(mc_soft, own)  # the checker's labels on the same steps
    split = torch.Generator().manual_seed(args.seed)
    train_ids, heldout_ids = split_by_prompt([RMExample(p.prompt, "", ()) for p in picked], args.heldout, split)
    heldout_prompts = {e.prompt for e in heldout_ids}
    part = lambda xs, held: [e for e in xs if (e.prompt in heldout_prompts) == held]  # noqa: E731
    truth = {"checker": relabel(part(mc_soft, True), own), "prefix": relabel(part(mc_soft, True), prefix)}
    results["prm"] = {}
    print(f"\nPRMs trained on {len(part(mc_soft, False))} solutions ({args.rm_steps} steps each), "
          f"held-out: {len(truth['checker'])} solutions of {len(heldout_prompts)} questions")
    print("   trained on          AUROC(checker)  AUROC(prefix)  accuracy(checker)")
    for name, examples in [("checker labels", checker), (f"MC soft, N={n}", mc_soft), (f"MC hard, N={n}", mc_hard)]:
        model = build_reward_model(tokenizer, init_from=policy, seed=args.seed).to(device)
        train_reward_model(model, tokenizer, part(examples, False), steps=args.rm_steps, batch_size=args.rm_batch_size,
                           lr=args.rm_lr, seed=args.seed, drop_last=False, progress=False)
        metrics = {k: evaluate_reward_model(model, tokenizer, v) for k, v in truth.items()}
        results["prm"][name] = metrics
        print(f"   {name:18s}  {metrics['checker']['auroc']:14.3f}  {metrics['prefix']['auroc']:13.3f}  {metrics['checker']['accuracy']:17.3f}")

    if args.json:
        args.json.write_text(json.dumps({"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                                         "overrides": overrides, **results}, indent=2))
        print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    sys.exit(main())
