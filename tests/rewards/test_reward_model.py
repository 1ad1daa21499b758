"""The reward model: labels and scores sit on the right tokens (ORM: the last completion token; PRM: each
step's last token), the reward-source interface, and the cached initial reward model."""

import pytest
import torch

from grpo.models.tokenizer import build_char_tokenizer
from grpo.rewards.learned import reward as model_reward_mod
from grpo.rewards.learned.reward import LearnedReward
from grpo.rewards.learned.network import build_reward_model, encode
from grpo.rewards.learned.data import RMExample, label_examples
from grpo.tasks.arithmetic import ArithmeticTask
from grpo.tasks.base import Problem
from grpo_testkit import tiny_lm

TASK = ArithmeticTask(train_size=300, heldout_size=50)
# Char tokenizer: one token per character, so token index == character index (plus the prompt's length).
PROBLEM = Problem("Q:12+5-3=", "14", "12+5=17;17-3=14;A:14")  # the prompt is 9 tokens
# 12+5=18 is wrong (17); 18-3=15 is right from its own previous value; the answer 15 is wrong (14).
#            index: 0123456789012345678 9
COMPLETION = "12+5=18;18-3=15;A:15"


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer(ArithmeticTask.alphabet)


def bound(kind: str, tokenizer, seed: int = 0, **settings) -> LearnedReward:
    """A LearnedReward around a random tiny reward model (no initial training)."""
    reward = LearnedReward(kind=kind, **settings)
    reward.task, reward.tokenizer = TASK, tokenizer
    reward.model = build_reward_model(tokenizer, arch=dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64), seed=seed).eval()
    reward._policy = reward.model
    return reward


def test_prm_labels_land_on_each_steps_last_token(tokenizer):
    (example,) = label_examples(TASK, "prm", [PROBLEM], [COMPLETION])
    assert example.targets == ((7, 0.0), (15, 1.0), (19, 0.0))  # ';' of step 1, ';' of step 2, the answer's last digit
    batch = encode(tokenizer, [example])
    assert batch["positions"].tolist() == [9 + 7, 9 + 15, 9 + 19]
    assert batch["rows"].tolist() == [0, 0, 0] and batch["labels"].tolist() == [0.0, 1.0, 0.0]
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0, batch["positions"]].tolist())
    assert tokens == [";", ";", "5"]


def test_orm_label_lands_on_the_last_completion_token(tokenizer):
    right = "12+5=17;17-3=14;A:14"
    examples = label_examples(TASK, "orm", [PROBLEM] * 3, [COMPLETION, right, ""])
    assert [e.targets for e in examples] == [((19, 0.0),), ((19, 1.0),), ((-1, 0.0),)]
    batch = encode(tokenizer, examples)  # right-padded: row 2 is the prompt alone
    assert batch["positions"].tolist() == [28, 28, 8]  # 9 + 19; the empty completion: the prompt's last token ('=')
    assert batch["attention_mask"].sum(-1).tolist() == [29, 29, 9]


def logit_after(reward, text_ids) -> float:
    with torch.no_grad():
        return torch.sigmoid(reward.model(input_ids=torch.tensor([text_ids])).logits[0, -1, 0]).item()


def test_an_ended_completion_is_scored_with_its_eos(tokenizer):
    """The PRM reads the final step of a completion the policy ended at the EOS after it (it has seen the ending); the
    other steps where they end; without the ending known (None) or cut by the length limit, no EOS is shown."""
    reward = bound("prm", tokenizer, no_answer_penalty=0.0)
    prompt = tokenizer(PROBLEM.prompt, add_special_tokens=False).input_ids
    text = tokenizer(COMPLETION, add_special_tokens=False).input_ids
    (ended,) = reward.steps([PROBLEM], [COMPLETION], ended=[True])
    (unknown,) = reward.steps([PROBLEM], [COMPLETION])
    assert [c for c, _ in ended] == [7, 15, 19]
    assert ended[2][1] == pytest.approx(logit_after(reward, prompt + text + [tokenizer.eos_token_id]), abs=1e-5)
    assert unknown[2][1] == pytest.approx(logit_after(reward, prompt + text), abs=1e-5)
    assert [v for _, v in ended[:2]] == pytest.approx([v for _, v in unknown[:2]], abs=1e-6)
    assert ended[2][1] != pytest.approx(unknown[2][1], abs=1e-4)
    batch = encode(tokenizer, label_examples(TASK, "prm", [PROBLEM], [COMPLETION], ended=[True]))
    assert batch["positions"].tolist() == [9 + 7, 9 + 15, 9 + 20]  # training reads the same places: the EOS is token 20
    assert batch["input_ids"][0, 29].item() == tokenizer.eos_token_id
    orm = bound("orm", tokenizer, no_answer_penalty=0.0)
    assert orm.outcome([PROBLEM], [COMPLETION], ended=[True]).item() == pytest.approx(
        logit_after(orm, prompt + text + [tokenizer.eos_token_id]), abs=1e-5)


def test_a_cut_tail_gets_the_lowest_step_reward_and_no_answer_a_penalty(tokenizer):
    from grpo.rewards.learned.mc_labels import MonteCarloStepLabels
    from grpo.rollout.segmenters import MarkerSteps

    reward = bound("prm", tokenizer, no_answer_penalty=0.0)
    reward.step_labels = MonteCarloStepLabels(MarkerSteps(";"))  # steps closed by ';', an unclosed tail is a step too
    cut = "12+5=17;17-3=1"  # the length limit cut step 2 ("17-3=1" of "17-3=14")
    (row,), (same,) = reward.steps([PROBLEM], [cut], ended=[False]), reward.steps([PROBLEM], [cut], ended=[True])
    assert [c for c, _ in row] == [7, 13] and row[1][1] == 0.0 and same[1][1] > 0  # 0, the lowest, only when cut
    assert row[0][1] == pytest.approx(same[0][1])
    assert reward.steps([PROBLEM], [COMPLETION], ended=[False])[0][2][1] == 0.0  # "A:15" cut there: not a right step
    assert reward.steps([PROBLEM], ["12+5=17;"], ended=[False])[0][0][1] > 0  # closed by its ';': no tail
    # no_answer_penalty: taken off the last step of a completion that states no final answer (no "A:<number>")
    penalised = bound("prm", tokenizer, no_answer_penalty=1.0)
    penalised.step_labels = reward.step_labels
    no_answer = "12+5=17;17-3=14;"
    (p_row,), (q_row,) = penalised.steps([PROBLEM], [no_answer], ended=[True]), reward.steps([PROBLEM], [no_answer], ended=[True])
    assert p_row[-1][1] == pytest.approx(q_row[-1][1] - 1.0) and p_row[0] == q_row[0]
    assert penalised.steps([PROBLEM], [COMPLETION], ended=[True]) == reward.steps([PROBLEM], [COMPLETION], ended=[True])
    orm, orm0 = bound("orm", tokenizer, no_answer_penalty=1.0), bound("orm", tokenizer, no_answer_penalty=0.0)
    assert orm.outcome([PROBLEM], [no_answer]).item() == pytest.approx(orm0.outcome([PROBLEM], [no_answer]).item() - 1.0)
    with pytest.raises(ValueError, match="no_answer_penalty"):
        LearnedReward(no_answer_penalty=-1)


def test_prm_without_steps_is_dropped_orm_kept():
    assert label_examples(TASK, "prm", [PROBLEM], ["garbage"]) == []
    assert len(label_examples(TASK, "orm", [PROBLEM], ["garbage"])) == 1


def test_prm_steps_scores_are_the_models_outputs_at_the_step_ends(tokenizer):
    reward = bound("prm", tokenizer)
    other = Problem("Q:5*3+1=", "16", "5*3=15;15+1=16;A:16")
    (row, row2) = reward.steps([PROBLEM, other], [COMPLETION, "5*3=15;A:1"])  # batched, padded
    assert [c for c, _ in row] == [7, 15, 19]  # the verifier's step ends, not its labels
    ids = tokenizer(PROBLEM.prompt + COMPLETION, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = reward.model(input_ids=ids).logits[0, :, 0]
    expected = torch.sigmoid(logits[[16, 24, 28]])
    torch.testing.assert_close(torch.tensor([r for _, r in row]), expected, rtol=1e-5, atol=1e-5)
    assert [c for c, _ in row2] == [6, 9]
    # PRM outcome: the lowest step score
    torch.testing.assert_close(reward.outcome([PROBLEM], [COMPLETION]), expected.min()[None], rtol=1e-5, atol=1e-5)


def test_step_score_depends_only_on_text_up_to_its_end(tokenizer):
    reward = bound("prm", tokenizer)
    base = reward.steps([PROBLEM], [COMPLETION])[0]
    later = reward.steps([PROBLEM], ["12+5=18;18-3=16;A:16"])[0]  # differs after step 1's end only
    earlier = reward.steps([PROBLEM], ["12+5=19;19-3=16;A:16"])[0]  # differs inside step 1
    assert later[0] == pytest.approx(base[0], abs=1e-6)
    assert earlier[0] != pytest.approx(base[0], abs=1e-6)


def test_orm_outcome_is_the_score_at_the_last_token(tokenizer):
    reward = bound("orm", tokenizer, no_answer_penalty=0.0)
    completions = [COMPLETION, "12+5=17;A:1", ""]
    scores = reward.outcome([PROBLEM] * 3, completions)
    assert scores.shape == (3,) and ((scores > 0) & (scores < 1)).all()
    for completion, s in zip(completions, scores):
        ids = tokenizer(PROBLEM.prompt + completion, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            last = reward.model(input_ids=ids).logits[0, -1, 0]
        assert s.item() == pytest.approx(torch.sigmoid(last).item(), abs=1e-5)
    with pytest.raises(ValueError, match="prm"):
        reward.steps([PROBLEM], [COMPLETION])


def test_kind_follows_the_advantage_estimator():
    """reward.kind null: the pipeline's supervise(needs_step_rewards) makes a PRM or an ORM; a wrong pair is refused."""
    assert LearnedReward().supervise(process=False).kind == "orm"
    assert LearnedReward().supervise(process=True).kind == "prm"
    assert LearnedReward(kind="prm").supervise(process=False).kind == "prm"  # a PRM can give outcome rewards (min)
    with pytest.raises(ValueError, match="kind=prm"):
        LearnedReward(kind="orm").supervise(process=True)
    with pytest.raises(ValueError, match="supervise"):
        LearnedReward().bind(TASK, policy=tiny_lm()[0], tokenizer=tiny_lm()[1])  # neither told nor set: no guess


@pytest.mark.parametrize("supervision, kind", [("outcome", "orm"), ("process", "prm"), ("rloo", "orm")])
def test_the_pipeline_tells_the_reward_model_what_the_estimator_wants(supervision, kind, tmp_path, monkeypatch):
    """python train.py reward=model supervision=<s>: no grpo.supervision to keep in step; the estimator decides,
    alone or as a component of a weighted reward; kind=orm under a process estimator stops before the policy loads."""
    from grpo import pipeline
    from grpo.rewards.combine import learned_component
    from grpo_testkit import compose_config

    built = {}

    def stop(source, task, task_key):  # the policy's loading: the reward is composed and told by then
        raise RuntimeError("stop")

    monkeypatch.setattr("grpo.models.sources.TinyPolicy.load", stop)
    original = pipeline.supervise
    monkeypatch.setattr(pipeline, "supervise", lambda r, p: built.setdefault("reward", original(r, p)))
    for reward in (["reward=model"], ["reward=weighted", "+reward@reward.components.model.fn=model"]):
        cfg = compose_config(reward + [f"supervision={supervision}", f"model.cache_dir={tmp_path}"], output_dir=tmp_path)
        assert "supervision" not in cfg.grpo
        with pytest.raises(RuntimeError, match="stop"):
            pipeline.build(cfg)
        assert learned_component(built.pop("reward")).kind == kind
    cfg = compose_config(["reward=model", "reward.kind=orm", "supervision=process", f"model.cache_dir={tmp_path}"], output_dir=tmp_path)
    with pytest.raises(ValueError, match="reward.kind=orm scores whole outputs"):
        pipeline.build(cfg)


def test_the_reward_models_own_size(tmp_path):
    """python train.py reward=model reward.init_from_policy=false reward.arch.hidden_size=256: a reward model larger
    than the policy (its other fields the policy's); the same override with init_from_policy=true is refused."""
    from hydra.utils import instantiate

    from grpo_testkit import compose_config

    cfg = compose_config(["reward=model", "reward.init_from_policy=false", "reward.arch.hidden_size=256"], output_dir=tmp_path)
    reward = instantiate(cfg.reward)
    assert reward.model_kwargs["arch"].hidden_size == 256 and reward.model_kwargs["arch"].num_layers == cfg.model.arch.num_layers
    tok = build_char_tokenizer(ArithmeticTask.alphabet)
    model = build_reward_model(tok, init_from=None, seed=0, **reward.model_kwargs)  # what _build does without init_from_policy
    assert model.config.hidden_size == 256 and model.config.num_hidden_layers == cfg.model.arch.num_layers
    policy = tiny_lm(**{k: v for k, v in cfg.model.arch.items() if k != "family"})[0]  # model=tiny's arch
    same_size = instantiate(compose_config(["reward=model"], output_dir=tmp_path).reward)
    same_size._check_arch(policy)  # the policy's own arch (the default): fine
    bigger = instantiate(compose_config(["reward=model", "reward.arch.hidden_size=256", f"reward.cache_dir={tmp_path}",
                                         "reward.initial_prompts=2", "reward.initial_steps=1"], output_dir=tmp_path).reward)
    with pytest.raises(ValueError, match="reward.init_from_policy=false"):
        bigger.supervise(False).bind(TASK, policy=policy, tokenizer=tok)


def test_build_from_policy_and_from_a_directory(tokenizer, tmp_path):
    policy, tok = tiny_lm(seed=1)
    model = build_reward_model(tok, init_from=policy)
    torch.testing.assert_close(model.base_model.embed_tokens.weight, policy.base_model.embed_tokens.weight)
    assert model.config.num_labels == 1 and model.score.out_features == 1
    model.save_pretrained(tmp_path / "rm")
    again = build_reward_model(tok, name_or_path=str(tmp_path / "rm"))
    torch.testing.assert_close(again.score.weight, model.score.weight)
    with pytest.raises(ValueError, match="reward.name_or_path"):
        build_reward_model(tok, name_or_path=str(tmp_path / "missing"))


def test_initial_reward_model_is_trained_once_then_cached(tmp_path, monkeypatch):
    policy, tokenizer = tiny_lm(seed=1)
    make = lambda: LearnedReward(
        kind="orm", initial_prompts=6, samples_per_prompt=2, max_new_tokens=12, heldout_fraction=0.5,
        initial_steps=2, batch_size=4, cache_dir=str(tmp_path),
    )
    reward = make().bind(TASK, policy=policy, tokenizer=tokenizer)
    (path,) = [p for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith("reward-orm-")]
    assert (path / "config.json").exists() and (path / "examples.json").exists()
    assert len(reward.initial_examples) == 6  # 3 of the 6 questions x 2 samples; the other 3 are held out
    assert set(reward.initial_metrics) == {"accuracy", "auroc", "positive_rate"}
    assert reward.outcome([PROBLEM], [COMPLETION]).shape == (1,)

    def no_training(*args, **kwargs):
        raise AssertionError("the cached reward model should have been loaded")

    monkeypatch.setattr(model_reward_mod, "train_reward_model", no_training)
    again = make().bind(TASK, policy=policy, tokenizer=tokenizer)
    for a, b in zip(again.model.parameters(), reward.model.parameters()):
        assert torch.equal(a, b)
    # another starting policy gets its own reward model
    assert make().cache_path(TASK, tiny_lm(seed=2)[0]) != make().cache_path(TASK, policy)
