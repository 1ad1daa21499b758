"""Do an ensemble's reward models agree on the policy's mistakes? Measured at the run's start and at its checkpoint.

    .venv/bin/python scripts/ensemble_agreement.py outputs/multirun/<sweep>/<job>     # the run's overrides and last.ckpt
    .venv/bin/python scripts/ensemble_agreement.py <run dir> --questions 400 --samples 2 --json agreement.json

The run is one with a PRM ensemble (reward.ensemble.size >= 2, alone or as a component of reward=prm_verifier). Its
config comes from <run dir>/.hydra/overrides.yaml (trailing overrides are added after those), its end from
<run dir>/checkpoints/last.ckpt (--checkpoint: another one). Twice, with the warm start and the initial members, then
with the checkpoint's policy and members, the script samples --samples completions of the first --questions held-out
questions and scores each by its lowest step reward, per member and aggregated, and prints:

- right: the share of completions the verifier accepts;
- auroc: per member and for the aggregate, how each ranks right above wrong completions;
- pass: among wrong completions, the share scored >= 0.5 by each member, by all of them and by any one;
- corr: per pair of members, the correlation of their scores on the wrong completions.

How to read it: members whose scores on wrong completions correlate strongly, and an aggregate that ranks no better
than its members, share their blind spots; a policy that games the ensemble moves to mistakes they all accept (the
correlation and the share passing all of them rise from start to end).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import grpo.quiet  # noqa: F401  (third-party tips)
from grpo.pipeline import instantiate_clearly, load_policy
from grpo.rewards.base import supervise
from grpo.rewards.combine import learned_component
from grpo.rewards.learned.data import RMExample
from grpo.rewards.learned.network import score
from grpo.rollout.engine import KVCacheEngine, sample_problems
from grpo.rollout.gauge import auroc
from grpo.tasks.base import verified

REPO = Path(__file__).resolve().parents[1]


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a run's directory: .hydra/overrides.yaml and checkpoints/last.ckpt")
    p.add_argument("--checkpoint", type=Path, help="the checkpoint to measure at the end (default: last.ckpt)")
    p.add_argument("--questions", type=int, default=400, help="held-out questions (the first ones)")
    p.add_argument("--samples", type=int, default=2, help="completions per question")
    p.add_argument("--seed", type=int, default=123, help="sampling seed (the same at start and end)")
    p.add_argument("--json", type=Path, help="write the measurements here")
    p.add_argument("overrides", nargs="*", help="config overrides added after the run's own")
    return p.parse_intermixed_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    saved = args.run_dir / ".hydra" / "overrides.yaml"
    if not saved.exists():
        raise SystemExit(f"{saved} is missing: pass the directory of a run made by train.py (it writes .hydra/)")
    checkpoint = args.checkpoint or args.run_dir / "checkpoints" / "last.ckpt"
    if not checkpoint.exists():
        raise SystemExit(f"{checkpoint} is missing: pass --checkpoint, or a run that saved checkpoints")
    overrides = [o for o in OmegaConf.load(saved) if not o.startswith("hydra.")] + list(args.overrides)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    reward = learned_component(supervise(instantiate_clearly(cfg.reward), instantiate_clearly(cfg.advantage).needs_step_rewards))
    if reward is None or reward.kind != "prm" or reward.ensemble["size"] < 2:
        raise SystemExit(f"{args.run_dir} has no PRM ensemble: the script compares the members of reward.ensemble.size >= 2 "
                         "with process supervision")
    task, policy, tokenizer = load_policy(cfg)
    policy.to("cuda" if torch.cuda.is_available() else "cpu")
    reward.bind(task, policy=policy, tokenizer=tokenizer)
    problems = task.heldout_problems()[: args.questions]
    engine = KVCacheEngine(max_new_tokens=cfg.sampling.max_new_tokens, temperature=cfg.sampling.temperature)
    result = {"start": measure(task, policy, tokenizer, reward, engine, problems, args.samples, args.seed)}
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    load_checkpoint(state, policy, reward)
    result["end"] = measure(task, policy, tokenizer, reward, engine, problems, args.samples, args.seed)
    result["end"]["step"] = state.get("global_step")
    for name, row in result.items():
        print(report(name, row))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


def load_checkpoint(state: dict, policy, reward) -> None:
    """The checkpoint's policy weights (the module's `policy.*`) and reward-model weights into `policy` and `reward`."""
    weights = {k[len("policy."):]: v for k, v in state["state_dict"].items() if k.startswith("policy.")}
    try:
        policy.load_state_dict(weights)
    except RuntimeError as err:
        raise SystemExit(f"the checkpoint's policy weights do not fit the run's policy (a LoRA or sharded checkpoint is "
                         f"not read here): {str(err)[:300]}") from err
    reward_state = state["reward_state"]
    if "reward_model" not in reward_state:  # a weighted reward: keyed by component name
        reward_state = next(s for s in reward_state.values() if isinstance(s, dict) and "reward_model" in s)
    reward.load_state_dict(reward_state)


@torch.no_grad()
def measure(task, policy, tokenizer, reward, engine, problems, samples: int, seed: int) -> dict:
    device = next(policy.parameters()).device
    engine.load_weights(policy)
    _, _, drawn = sample_problems(engine, tokenizer, problems, device=device, num_samples=samples,
                                  generator=torch.Generator(device=device).manual_seed(seed))
    texts = tokenizer.batch_decode(drawn.ids.cpu(), skip_special_tokens=True)
    ended = (~drawn.truncated.cpu()).tolist()
    asked = [p for p in problems for _ in range(samples)]
    examples, right = [], []
    for problem, text, done in zip(asked, texts, ended):
        ends = reward.step_labels.ends(task, problem, text)
        if ends:  # a completion without a step has no step score
            examples.append(RMExample(problem.prompt, text, tuple((c, 0.0) for c in ends), done))
            right.append(verified(task, problem, text))
    members = [[min(row) for row in score(m, reward.tokenizer, examples)] for m in reward.members]
    combined = [min(row) for row in score(reward.model, reward.tokenizer, examples)]
    return agreement(members, combined, right)


def agreement(members: list[list[float]], combined: list[float], right: list[bool]) -> dict:
    """The measurements of one set of completions from their scores: members[k][i] member k's score of completion i,
    combined[i] the aggregate's, right[i] the verifier's verdict (see the module docstring)."""
    wrong = [i for i, r in enumerate(right) if not r]
    share = lambda rows: sum(rows) / len(rows) if rows else float("nan")
    corr = {}
    for a, b in itertools.combinations(range(len(members)), 2):
        x, y = ([members[k][i] for i in wrong] for k in (a, b))
        corr[f"{a},{b}"] = statistics.correlation(x, y) if len(wrong) > 1 and len(set(x)) > 1 and len(set(y)) > 1 else float("nan")
    return {
        "completions": len(right),
        "right": share(right),
        "auroc": {"members": [auroc(s, right) for s in members], "aggregate": auroc(combined, right)},
        "pass": {"members": [share([s[i] >= 0.5 for i in wrong]) for s in members],
                 "aggregate": share([combined[i] >= 0.5 for i in wrong]),
                 "all": share([all(s[i] >= 0.5 for s in members) for i in wrong]),
                 "any": share([any(s[i] >= 0.5 for s in members) for i in wrong])},
        "corr": corr,
    }


def report(name: str, row: dict) -> str:
    f = lambda xs: ", ".join(f"{x:.3f}" for x in xs)
    where = f"{name} (step {row['step']})" if row.get("step") is not None else name
    return "\n".join([
        f"{where}: {row['completions']} completions, right {row['right']:.3f}",
        f"  auroc  members {f(row['auroc']['members'])}; aggregate {row['auroc']['aggregate']:.3f}",
        f"  wrong scored >= 0.5: members {f(row['pass']['members'])}; aggregate {row['pass']['aggregate']:.3f}; "
        f"all members {row['pass']['all']:.3f}; any member {row['pass']['any']:.3f}",
        "  corr on wrong: " + "; ".join(f"{pair} {v:.3f}" for pair, v in row["corr"].items()),
    ])


if __name__ == "__main__":
    main()
