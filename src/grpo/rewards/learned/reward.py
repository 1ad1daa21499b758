"""Rewards from a learned reward model (conf/reward/model.yaml): an ORM or a PRM.

- ORM (outcome reward model): `outcome` is sigmoid(score) at the completion's last token.
- PRM (process reward model): `steps` puts sigmoid(score) at the end of each reasoning step. Its step
  labels come from the `step_labels` component: step_labels=checker (the default) labels each step with
  the task's step checker (`task.step_rewards`, whose step ends the PRM then scores at; never its labels);
  step_labels=mc labels the `steps` segmenter's steps with Monte-Carlo continuations checked by the
  final-answer verifier (`mc_labels`: any task with a verifier gets process supervision). `outcome` of a
  PRM is its lowest step score (a solution is as good as its worst step).

`bind` makes the initial reward model: it samples the starting policy on training questions, labels
the samples with the verifier (ORM: answer right; PRM: each step right), and trains the model on
them, reporting held-out accuracy and AUROC on questions it did not train on. The result is cached
under `cache_dir`, keyed by everything that shapes it (settings, task, a fingerprint of the policy's
weights), like the policy's warm start; later runs load it. The iterative schedule
(rm_schedule=iterative) then keeps training it on samples of the current policy.

reward.implicit_beta=beta makes the model an implicit PRM (`implicit.ImplicitPRM`): a causal LM whose score is
beta times its cumulative log-likelihood ratio to its frozen starting point, trained on the same labels.

reward.ensemble.size=K reads K such models as one (`ensemble.RewardEnsemble`): member k is the model
reward.seed + k builds (cached apart), their logits combined by reward.ensemble.aggregate (mean | min | lcb);
retraining trains each member on its own.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor
from transformers import AutoTokenizer

from grpo.models.cache import build_once
from grpo.models.tiny import TinyArch
from grpo.rewards.learned.data import KINDS, CheckerStepLabels, RMExample, label_examples, split_by_prompt
from grpo.rewards.learned.endings import is_cut_tail
from grpo.rewards.learned.ensemble import RewardEnsemble, ensemble_settings
from grpo.rewards.learned.fingerprint import policy_fingerprint, task_settings
from grpo.rewards.learned.implicit import checked_beta
from grpo.rewards.learned.network import build_reward_model, load_reward_model, score
from grpo.rewards.learned.training import evaluate_reward_model, train_reward_model
from grpo.rollout.engine import KVCacheEngine, sample_problems

log = logging.getLogger(__name__)



class LearnedReward:
    """A reward source (grpo.rewards.base.RewardSource) backed by a trained reward model; see the module docstring."""

    name = "model"  # rollout/reward/model

    def __init__(
        self,
        kind: str | None = None,
        name_or_path: str | None = None,
        init_from_policy: bool = True,
        arch: TinyArch | Mapping | None = None,
        dtype: str = "float32",
        trust_remote_code: bool = False,
        initial_prompts: int = 128,
        samples_per_prompt: int = 4,
        max_new_tokens: int = 48,
        temperature: float = 1.0,
        heldout_fraction: float = 0.2,
        initial_steps: int = 150,
        batch_size: int = 32,
        lr: float = 3e-4,
        score_batch_size: int = 64,
        no_answer_penalty: float = 1.0,
        seed: int = 0,
        cache_dir: str = "outputs/cache",
        step_labels=None,
        ensemble=None,
        implicit_beta: float | None = None,
    ):
        if kind not in (None, *KINDS):
            raise ValueError(f"reward.kind={kind!r} is not known; choose orm or prm (or null: from the advantage estimator)")
        # a PRM's step labels: CheckerStepLabels (task.step_rewards) or mc_labels.MonteCarloStepLabels (the step_labels group)
        self.step_labels = CheckerStepLabels() if step_labels is None else step_labels
        if isinstance(self.step_labels, str) or not callable(self.step_labels):
            raise ValueError(f"reward.step_labels={step_labels!r}: choose the step labels with the step_labels group: "
                             "step_labels=checker (the task's step checker) or step_labels=mc (Monte-Carlo continuations)")
        self.requested_kind = kind
        self.kind = None if kind is None else self._checked_kind(kind, process=kind == "prm")
        # a field left null is the policy's (TinyArch's default without a tiny policy)
        self.arch_fields = {k: v for k, v in dict(arch).items() if v is not None} if isinstance(arch, Mapping) else None
        self.model_kwargs = dict(
            name_or_path=name_or_path,
            arch=TinyArch.from_node(arch if self.arch_fields is None else self.arch_fields, where="reward.arch"),
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            implicit_beta=checked_beta(implicit_beta),
        )
        self.init_from_policy = init_from_policy and name_or_path is None
        self.data = dict(
            initial_prompts=initial_prompts,
            samples_per_prompt=samples_per_prompt,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            heldout_fraction=heldout_fraction,
        )
        self.train_kwargs = dict(steps=initial_steps, batch_size=batch_size, lr=lr)
        self.score_batch_size, self.seed, self.cache_dir = score_batch_size, seed, Path(cache_dir)
        if isinstance(no_answer_penalty, bool) or not isinstance(no_answer_penalty, (int, float)) or not 0 <= no_answer_penalty < float("inf"):
            raise ValueError(f"reward.no_answer_penalty={no_answer_penalty!r}: must be a number >= 0 (0: no penalty; default 1.0)")
        self.no_answer_penalty = float(no_answer_penalty)
        self.ensemble = ensemble_settings(ensemble)  # {size, aggregate, std_weight}: member k is what seed + k builds
        self.task = self.model = self.tokenizer = self._policy = None  # model: the one reward model, or a RewardEnsemble
        self.initial_examples: list[RMExample] = []  # the initial training set (the replay buffer starts from it)
        self.initial_metrics: dict[str, float] = {}

    def _checked_kind(self, kind: str, process: bool) -> str:
        if kind == "orm" and process:
            raise ValueError("reward.kind=orm scores whole outputs only; the advantage estimator (supervision=process) wants "
                             "step rewards: use reward.kind=prm (or null: a PRM follows from supervision=process)")
        if kind == "orm" and self.step_labels.describe() is not None:
            raise ValueError("step_labels=mc labels reasoning steps for a PRM; an ORM (supervision=outcome) learns from the "
                             "verifier's answers: add supervision=process, or drop step_labels=mc")
        return kind

    def supervise(self, process: bool) -> "LearnedReward":
        """Called by the pipeline with what the rollout's advantage estimator wants (`needs_step_rewards`): step
        rewards (process True) make a PRM, one reward per output an ORM, unless reward.kind says which (a PRM may give
        outcome rewards, its lowest step score; an ORM cannot give step rewards)."""
        self.kind = self._checked_kind(self.requested_kind or ("prm" if process else "orm"), process)
        return self

    # ---- the initial reward model
    def bind(self, task, policy=None, tokenizer=None) -> "LearnedReward":
        """Load the cached initial reward model for (settings, task, policy), training it first if there is none."""
        if self.kind is None:
            raise ValueError("reward=model: ORM or PRM? call supervise(process) first (the pipeline does, from the advantage "
                             "estimator), or set reward.kind=orm|prm")
        if policy is None or tokenizer is None:
            raise ValueError("reward=model trains on samples of the starting policy: bind(task, policy=..., tokenizer=...)")
        self._check_arch(policy)
        self.task, self._policy = task, policy
        self.step_labels.bind(policy, tokenizer)  # step_labels=mc continues prefixes with the policy (which keeps training)
        members, self.initial_examples, metrics = [], [], []
        for seed in range(self.seed, self.seed + self.ensemble["size"]):
            path = build_once(self.cache_path(task, policy, seed), "examples.json",
                              lambda tmp, seed=seed: self._build(task, policy, tokenizer, tmp, seed))
            model, self.tokenizer = load_reward_model(str(path))
            members.append(model)
            saved = json.loads((path / "examples.json").read_text())
            self.initial_examples += [RMExample.from_plain(e) for e in saved["train"]]  # every member's training set
            metrics.append(saved["metrics"])
        self.initial_metrics = _mean_metrics(metrics)  # each member on its own held-out questions
        if len(members) == 1:
            self.model = members[0]
        else:
            self.model = RewardEnsemble(members, self.ensemble["aggregate"], self.ensemble["std_weight"])
            log.info("Reward model ensemble of %d (aggregate %s); members' held-out %s", len(members),
                     self.ensemble["aggregate"], "; ".join(_fmt(m) for m in metrics))
        self.model.eval()  # not a child of the LightningModule: no strategy wraps, shards or optimizes it
        return self

    @property
    def members(self) -> list:
        """The reward models: the one, or the ensemble's members (each trained on its own)."""
        return list(self.model.members) if isinstance(self.model, RewardEnsemble) else [self.model]

    def _check_arch(self, policy) -> None:
        """init_from_policy copies the policy's backbone: a reward.arch that differs from it would be ignored: refused."""
        if not self.init_from_policy or not self.arch_fields or not hasattr(policy, "config"):
            return
        config = policy.config
        have = {"family": config.model_type, "hidden_size": config.hidden_size, "num_layers": config.num_hidden_layers,
                "num_heads": config.num_attention_heads, "intermediate_size": config.intermediate_size,
                "max_position_embeddings": config.max_position_embeddings}
        differ = {k: v for k, v in self.arch_fields.items() if k in have and have[k] != v}
        if differ:
            raise ValueError(f"reward.arch {differ} differs from the policy's ({ {k: have[k] for k in differ} }), but "
                             "reward.init_from_policy=true copies the policy's backbone: add reward.init_from_policy=false "
                             "for a reward model of its own size")

    def cache_path(self, task, policy, seed: int | None = None) -> Path:
        """Where the model `seed` (default reward.seed; ensemble member k: reward.seed + k) builds is cached."""
        task_key = task_settings(task)
        model_key = {**self.model_kwargs, "arch": self.model_kwargs["arch"].as_dict()}
        if model_key["implicit_beta"] is None:  # a scalar head: the key as before implicit PRMs existed
            del model_key["implicit_beta"]
        seed = self.seed if seed is None else seed
        parts = [self.kind, "eos", model_key, self.init_from_policy, self.data, self.train_kwargs, seed,
                 type(task).__qualname__, task_key, policy_fingerprint(policy)]
        labels = self.step_labels.describe() if self.kind == "prm" else None  # None (the checker): the key as before
        key = json.dumps(parts + ([labels] if labels is not None else []), sort_keys=True)
        return self.cache_dir / f"reward-{self.kind}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    def _build(self, task, policy, tokenizer, out: Path, seed: int) -> None:
        name_or_path = self.model_kwargs["name_or_path"]
        rm_tokenizer = tokenizer if name_or_path is None else AutoTokenizer.from_pretrained(name_or_path)
        model = build_reward_model(rm_tokenizer, init_from=policy if self.init_from_policy else None, seed=seed, **self.model_kwargs)
        generator = torch.Generator().manual_seed(seed)
        pool = task.train_problems()
        picked = [pool[i] for i in torch.randperm(len(pool), generator=generator)[: self.data["initial_prompts"]].tolist()]
        log.info("Initial %s: %d samples of the starting policy, %d training steps; cached for later runs",
                 self.kind.upper(), len(picked) * self.data["samples_per_prompt"], self.train_kwargs["steps"])
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        home = next(policy.parameters()).device
        engine = KVCacheEngine(max_new_tokens=self.data["max_new_tokens"], temperature=self.data["temperature"])
        engine.load_weights(policy.to(device))
        sampling = torch.Generator(device=device).manual_seed(seed)
        problems, texts, ended = [], [], []
        for start in progress_bar(range(0, len(picked), 64), desc="Sampling for the reward model"):
            chunk = picked[start : start + 64]
            _, _, drawn = sample_problems(engine, tokenizer, chunk, device=device, num_samples=self.data["samples_per_prompt"], generator=sampling)
            texts += tokenizer.batch_decode(drawn.ids.cpu(), skip_special_tokens=True)
            ended += (~drawn.truncated.cpu()).tolist()
            problems += [p for p in chunk for _ in range(self.data["samples_per_prompt"])]
        spent = copy.copy(getattr(self.step_labels, "cost", None))  # MC labelling's running total before this build
        examples = self.label(problems, texts, ended)  # (step_labels=mc samples continuations: the policy is still on `device`)
        policy.to(home)
        train, heldout = split_by_prompt(examples, self.data["heldout_fraction"], generator)
        metrics = train_reward_model(
            model.to(device), rm_tokenizer, train, heldout, seed=seed, drop_last=False, desc=f"Initial {self.kind.upper()}", **self.train_kwargs
        )
        log.info("Initial %s on held-out samples of the starting policy: %s", self.kind.upper(), _fmt(metrics))
        model.cpu().save_pretrained(out)
        rm_tokenizer.save_pretrained(out)
        plain = {"train": [e.to_plain() for e in train], "heldout": [e.to_plain() for e in heldout], "metrics": metrics}
        cost = None if spent is None else self.step_labels.cost - spent  # this build's (not earlier members')
        if cost is not None and cost.steps and self.kind == "prm":  # Monte-Carlo labels made here: what they cost
            plain["label_cost"] = {**vars(cost), **cost.per_step()}
            log.info("Monte-Carlo step labels: %d steps of %d solutions; %s", cost.steps, cost.solutions, _fmt(cost.per_step()))
        (out / "examples.json").write_text(json.dumps(plain))

    # ---- the reward source interface (see VerifierReward); ended: per completion True (EOS) / False (cut by the
    # length limit) / None (not known), from the rollout (grpo.rewards.base)
    def outcome(self, problems, completions: list[str], ended=None) -> Tensor:
        """[N] rewards: ORM, sigmoid(score) at the last completion token (at its EOS when it ended); PRM, the lowest
        step score. Minus no_answer_penalty where the completion states no final answer."""
        if self.kind == "prm":
            return torch.tensor([min((r for _, r in row), default=0.0) for row in self.steps(problems, completions, ended)])
        ended = _endings(ended, completions)
        examples = [RMExample(p.prompt, c, ((len(c) - 1, 0.0),), e) for p, c, e in zip(problems, completions, ended)]
        scores = [s[0] - self._penalty(c) for c, s in zip(completions, self._score(examples))]
        return torch.tensor(scores)

    def steps(self, problems, completions: list[str], ended=None) -> list[list[tuple[int, float]]]:
        """Per completion: (index of the step's last character, sigmoid(PRM score) at that token) per step. The final
        step of an ended completion is scored at its EOS; a tail the length limit cut gets 0 (the lowest step reward);
        a completion that states no final answer has no_answer_penalty taken off its last step (a blank one gets a
        step of -no_answer_penalty at its end)."""
        if self.kind != "prm":
            raise ValueError("an ORM scores whole outputs; supervision=process needs reward.kind=prm (or null)")
        ended = _endings(ended, completions)
        ends = [self.step_labels.ends(self.task, p, text) for p, text in zip(problems, completions)]
        examples = [RMExample(p.prompt, text, tuple((c, 0.0) for c in row), e)
                    for p, text, row, e in zip(problems, completions, ends, ended)]
        out = []
        for text, row, scores, done in zip(completions, ends, self._score(examples), ended):
            steps = [(c, 0.0 if is_cut_tail(text, c, done) else s) for c, s in zip(row, scores)]
            penalty = self._penalty(text)
            if penalty and steps:
                steps[-1] = (steps[-1][0], steps[-1][1] - penalty)
            elif penalty and text.strip():
                steps = [(len(text.rstrip()) - 1, -penalty)]
            out.append(steps)
        return out

    def _penalty(self, completion: str) -> float:
        """no_answer_penalty if the completion states no final answer (task.extract_answer is None), else 0."""
        return self.no_answer_penalty if self.no_answer_penalty and self.task.extract_answer(completion) is None else 0.0

    def _score(self, examples: list[RMExample]) -> list[list[float]]:
        self.follow_policy_device()
        return score(self.model, self.tokenizer, examples, batch_size=self.score_batch_size)

    # ---- Algorithm 1: continued training on samples of the current policy (rm_schedule=iterative)
    def label(self, problems, completions: list[str], ended=None) -> list[RMExample]:
        """Training examples of `completions`: ORM, the verifier's answer labels; PRM, the step labels (the task's
        step checker, or Monte-Carlo continuations of the current policy). ended: per completion True (EOS) /
        False (cut by the length limit) / None (not known); the examples carry it (the encoder shows the EOS)."""
        if self.kind == "prm":
            return self.step_labels(self.task, problems, completions, ended)
        return label_examples(self.task, self.kind, problems, completions, ended)

    def evaluate(self, examples: list[RMExample]) -> dict[str, float]:
        """accuracy, auroc, positive_rate of the reward model on `examples`."""
        self.follow_policy_device()
        return evaluate_reward_model(self.model, self.tokenizer, examples)

    def retrain(self, examples: list[RMExample], *, steps: int, batch_size: int, lr: float, seed: int, progress: bool = True) -> None:
        """Continue training on `examples` (every rank the same: gradients all-reduced, replicas stay identical);
        each ensemble member on its own, member k's data order and dropout seeded by seed + 7907 k."""
        self.follow_policy_device()
        for k, member in enumerate(self.members):
            train_reward_model(member, self.tokenizer, examples, steps=steps, batch_size=batch_size, lr=lr, seed=seed + 7907 * k,
                               progress=progress, desc="Reward model" if len(self.members) == 1 else f"Reward model {k + 1}/{len(self.members)}")

    def state_dict(self) -> dict:
        return {"reward_model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["reward_model"])

    def follow_policy_device(self) -> None:
        """Keep the reward model on the policy's device (the strategy moves the policy, not this model)."""
        device = next(self._policy.parameters()).device
        if next(self.model.parameters()).device != device:
            self.model.to(device)


def _mean_metrics(metrics: list[dict[str, float]]) -> dict[str, float]:
    """Per metric every member reports, the mean of its finite values (nan if none is finite)."""
    keys = set.intersection(*(set(m) for m in metrics)) if metrics else set()
    finite = {k: [m[k] for m in metrics if math.isfinite(m[k])] for k in sorted(keys)}
    return {k: sum(v) / len(v) if v else math.nan for k, v in finite.items()}


def _endings(ended, completions: list[str]) -> list:
    if ended is None:
        return [None] * len(completions)
    if len(ended) != len(completions):
        raise ValueError(f"ended has {len(ended)} entries for {len(completions)} completions")
    return [None if e is None else bool(e) for e in ended]


def progress_bar(items, desc: str):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="batch", leave=False)


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())
