"""Monte-Carlo step labels (grpo.rewards.learned.mc_labels): exact hard and soft labels with completers whose
behaviour is known, the cost counters, the cache and its key, bad settings, sampling through the policy, and a
PRM trained on MC labels that scores wrong steps below right ones."""

from __future__ import annotations

import json
import random

import pytest
import torch

from grpo.rewards.learned import mc_labels as mc_mod
from grpo.rewards.learned.data import split_by_prompt
from grpo.rewards.learned.endings import is_final, step_cut
from grpo.rewards.learned.mc_labels import Continuations, MonteCarloStepLabels, PolicyCompleter, monte_carlo_labels
from grpo.rewards.learned.network import build_reward_model, score
from grpo.rewards.learned.reward import LearnedReward
from grpo.rewards.learned.training import train_reward_model
from grpo.rollout.segmenters import LineSteps, MarkerSteps
from grpo.tasks import ArithmeticLinesTask, Problem
from grpo_testkit import tiny_lm

TASK = ArithmeticLinesTask(train_size=400, heldout_size=50, seed=0)
PROBLEM = Problem("Q:12+5-3=", "14", "12+5=17\n17-3=14\n#### 14")
RIGHT = "12+5=17\n17-3=14\n#### 14"
SECOND_WRONG = "12+5=17\n17-3=15\n#### 15"
FIRST_WRONG = "12+5=18\n18-3=15\n#### 15"  # the checker calls step 2 right (it follows from 18); no answer is reachable


def prefix_is_right(problem, prefix: str) -> bool:
    """Every step written so far is right (the exact checker on the prefix, its last line closed)."""
    return all(r == 1.0 for _, r in TASK.step_rewards(problem, prefix + "\n"))


class Oracle:
    """A completer that does what a policy can do: it keeps writing the number the text ends in (one more digit, "0",
    when the prefix ends in a digit: `17` -> `170`, `#### 14` -> `#### 140`), then finishes with the right answer
    line if every step written so far is right, else a wrong one. With `half`, a right prefix of one step is finished
    right by only the first half of its n continuations. Records its calls."""

    def __init__(self, half: bool = False):
        self.half, self.calls = half, []

    def __call__(self, problems, prefixes, n, seed):
        self.calls.append((list(prefixes), n, seed))
        texts = []
        for problem, prefix in zip(problems, prefixes):
            more = "0" if prefix[-1:].isdigit() else ""  # a policy may go on writing the number it is in
            right, wrong = f"{more}\n#### {problem.answer}", f"{more}\n#### {int(problem.answer) + 1}"
            ok = prefix_is_right(problem, prefix + more)
            one_step = prefix.rstrip("\n").count("\n") == 0
            texts.append([right if ok and not (self.half and one_step and i >= n // 2) else wrong for i in range(n)])
        return Continuations(texts, tokens=sum(len(t) for row in texts for t in row))


def test_hard_and_soft_labels_of_a_completer_that_is_right_from_right_prefixes():
    completions = [RIGHT, SECOND_WRONG, FIRST_WRONG]
    oracle = Oracle()
    soft, cost = monte_carlo_labels(TASK, [PROBLEM] * 3, completions, LineSteps(), oracle, n=4, soft=True)
    # step ends: '7' of 17 (6), the last digit of step 2 (14), the answer's last digit (22); the final step is the
    # verifier's verdict on the completion (it ended: nothing follows it)
    assert [e.targets for e in soft] == [
        ((6, 1.0), (14, 1.0), (22, 1.0)),  # on 3d22abe (6, 0.0): "12+5=17" continued as "12+5=170"; (22, 0.0): "#### 140"
        ((6, 1.0), (14, 0.0), (22, 0.0)),
        ((6, 0.0), (14, 0.0), (22, 0.0)),  # the checker says (0, 1, 0): MC judges whether the answer is still reachable
    ]
    checker = [tuple(r for _, r in TASK.step_rewards(PROBLEM, c)) for c in completions]
    assert checker == [(1.0, 1.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)]
    hard, _ = monte_carlo_labels(TASK, [PROBLEM] * 3, completions, LineSteps(), Oracle(), n=4, soft=False)
    assert [e.targets for e in hard] == [e.targets for e in soft]  # all-or-nothing completers: soft == hard
    # 6 prefixes continued (the final steps are verified), "12+5=17\n" twice (RIGHT and SECOND_WRONG): 5 continued, x 4
    assert (cost.solutions, cost.steps, cost.prefixes, cost.continuations) == (3, 9, 5, 20)
    assert cost.per_step()["continuations_per_step"] == pytest.approx(20 / 9)
    assert sorted(set(oracle.calls[0][0])) == ["12+5=17\n", "12+5=17\n17-3=14\n", "12+5=17\n17-3=15\n", "12+5=18\n",
                                               "12+5=18\n18-3=15\n"]  # each prefix ends after its newline


def test_soft_labels_are_the_share_of_right_continuations():
    oracle = Oracle(half=True)
    soft, cost = monte_carlo_labels(TASK, [PROBLEM], [RIGHT], LineSteps(), oracle, n=4, soft=True, seed=7)
    assert soft[0].targets == ((6, 0.5), (14, 1.0), (22, 1.0))  # 2 of 4 continuations of "12+5=17\n" are right
    hard, _ = monte_carlo_labels(TASK, [PROBLEM], [RIGHT], LineSteps(), oracle, n=4, soft=False)
    assert hard[0].targets == ((6, 1.0), (14, 1.0), (22, 1.0))  # any right continuation
    assert oracle.calls[0][1:] == (4, 7)  # n and the seed reach the completer
    assert cost.tokens == sum(len(t) for row in [["\n#### 14"] * 2 + ["\n#### 15"] * 2, ["\n#### 14"] * 4] for t in row)


def test_the_final_step_is_verified_as_written_and_a_cut_tail_is_wrong():
    """ended=True: the policy stopped after `#### 14`; its final step is the completion's own verdict (no continuation,
    which could only append: `#### 140`). ended=False with no separator after the last step: the length limit cut it,
    so it is not a right step, even where its text verifies. A truncated text whose last step is closed (its newline
    written) has no tail: that step is continued as any other."""
    oracle = Oracle()
    cut_closed = "12+5=17\n"
    examples, cost = monte_carlo_labels(TASK, [PROBLEM] * 4, [RIGHT, RIGHT, SECOND_WRONG, cut_closed], LineSteps(), oracle,
                                        n=2, ended=[True, False, True, False])
    assert [e.targets for e in examples] == [
        ((6, 1.0), (14, 1.0), (22, 1.0)),
        ((6, 1.0), (14, 1.0), (22, 0.0)),  # cut by the length limit right after "14": a tail, label 0
        ((6, 1.0), (14, 0.0), (22, 0.0)),  # "#### 15" as written
        ((6, 1.0),),  # closed by its newline: continued
    ]
    assert [e.ended for e in examples] == [True, False, True, False]  # the examples carry their endings
    assert all(p.endswith("\n") for p in oracle.calls[0][0]) and RIGHT not in oracle.calls[0][0]
    assert cost.steps == 10 and cost.prefixes == 3  # "12+5=17\n", "...17-3=14\n", "...17-3=15\n"


@pytest.mark.parametrize("text, end, cut, closed, final", [
    ("12+5=17\n17-3=14", 6, 8, True, False),  # a line: cut after its newline
    ("12+5=17  \n17-3=14", 6, 10, True, False),  # spaces before the newline go with it
    ("7*3=21;21+12=33;A:33", 6, 7, True, False),  # a closing marker is the step's last character
    ("7*3=21;21+12=33;A:33", 5, 7, True, False),  # a regex step "7*3=21": its ';' follows
    ("She has 5. Then", 9, 10, True, False),  # trailing spaces are left to the continuation
    ("12+5=17\n#### 17", 6, 8, True, False),  # the next line's '#' is not taken
    ("12+5=17", 6, 7, False, True),  # nothing closes it
    ("12+5=17\n", 6, 8, True, True),
])
def test_where_a_prefix_stops(text, end, cut, closed, final):
    assert step_cut(text, end) == (cut, closed)
    assert is_final(text, end) == final


def test_max_steps_and_solutions_without_steps():
    examples, cost = monte_carlo_labels(TASK, [PROBLEM] * 2, [RIGHT, "  \n"], LineSteps(), Oracle(), n=2, max_steps=2)
    assert [e.targets for e in examples] == [((6, 1.0), (14, 1.0))]  # the first 2 steps; the blank solution dropped
    assert (cost.solutions, cost.steps, cost.continuations) == (1, 2, 4)


def test_other_segmentation_other_prefixes():
    oracle = Oracle()
    monte_carlo_labels(TASK, [PROBLEM], [RIGHT], MarkerSteps("\n", opens=False), oracle, n=1)
    assert oracle.calls[0][0] == ["12+5=17\n", "12+5=17\n17-3=14\n"]  # a closing marker ends at the newline; the final
    # step (the answer) is verified, not continued


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="step_labels.n=0"):
        monte_carlo_labels(TASK, [PROBLEM], [RIGHT], LineSteps(), Oracle(), n=0)
    with pytest.raises(ValueError, match="step_labels.n"):
        MonteCarloStepLabels(LineSteps(), n=-1)
    with pytest.raises(ValueError, match="max_steps"):
        MonteCarloStepLabels(LineSteps(), max_steps=0)
    with pytest.raises(ValueError, match="steps=line"):
        MonteCarloStepLabels("sentences")
    with pytest.raises(ValueError, match="returned"):
        monte_carlo_labels(TASK, [PROBLEM], [RIGHT], LineSteps(), lambda p, x, n, s: Continuations([[""]], 0), n=2)
    with pytest.raises(ValueError, match="supervision=process"):
        LearnedReward(step_labels=MonteCarloStepLabels(LineSteps())).supervise(process=False)
    with pytest.raises(ValueError, match="supervision=process"):
        LearnedReward(kind="orm", step_labels=MonteCarloStepLabels(LineSteps()))
    with pytest.raises(ValueError, match="step_labels=mc"):
        LearnedReward(step_labels="mc")


def test_labels_are_cached_under_a_key_of_what_made_them(tmp_path):
    oracle = Oracle()
    labels = MonteCarloStepLabels(LineSteps(), n=2, completer=oracle, cache_dir=str(tmp_path))
    first = labels(TASK, [PROBLEM] * 2, [RIGHT, FIRST_WRONG])
    assert len(oracle.calls) == 1 and len(list(tmp_path.glob("mc-labels-*.json"))) == 1
    again = labels(TASK, [PROBLEM] * 2, [RIGHT, FIRST_WRONG])
    assert again == first and len(oracle.calls) == 1  # from the cache
    saved = json.loads(next(tmp_path.glob("mc-labels-*.json")).read_text())
    assert saved["cost"]["continuations"] == 2 * 4 and labels.cost.steps == 6  # 2 x 2 prefixes continued, 2 final steps verified

    key = lambda **kw: MonteCarloStepLabels(**{"segmenter": LineSteps(), "completer": oracle, **kw}).key(TASK, [PROBLEM], [RIGHT])  # noqa: E731
    base = key()
    changed = [key(n=4), key(soft=False), key(max_steps=2), key(temperature=0.5), key(seed=1), key(segmenter=MarkerSteps("\n"))]
    assert base not in changed and len(set(changed)) == len(changed)
    assert MonteCarloStepLabels(LineSteps(), completer=oracle).key(TASK, [PROBLEM], [RIGHT], [False]) != base  # its ending
    assert MonteCarloStepLabels(LineSteps(), completer=oracle).key(TASK, [PROBLEM], [SECOND_WRONG]) != base  # other solutions
    other_task = ArithmeticLinesTask(train_size=400, heldout_size=50, seed=1)
    assert MonteCarloStepLabels(LineSteps(), completer=oracle).key(other_task, [PROBLEM], [RIGHT]) != base
    # the default completer is the policy: its weights are part of the key
    policy_key = lambda seed: MonteCarloStepLabels(LineSteps()).bind(tiny_lm(seed=seed)[0], None).key(TASK, [PROBLEM], [RIGHT])  # noqa: E731
    assert policy_key(1) != policy_key(2) and policy_key(1) == policy_key(1)


def test_the_policy_continues_each_prefix_through_the_engine(tmp_path, monkeypatch):
    policy, tokenizer = tiny_lm(alphabet=ArithmeticLinesTask.alphabet, seed=1)
    complete = PolicyCompleter(policy, tokenizer, max_new_tokens=6, temperature=1.0, batch_size=2)
    out = complete([PROBLEM] * 3, ["12+5=17", "12+5=17\n17-3=14", RIGHT], 4, seed=5)
    assert [len(row) for row in out.texts] == [4, 4, 4] and 0 < out.tokens <= 3 * 4 * 6
    assert all(len(t) <= 6 for row in out.texts for t in row)
    assert complete([PROBLEM] * 3, ["12+5=17", "12+5=17\n17-3=14", RIGHT], 4, seed=5) == out  # a function of the seed

    labels = MonteCarloStepLabels(LineSteps(), n=3, max_new_tokens=6, cache_dir=str(tmp_path)).bind(policy, tokenizer)
    examples = labels(TASK, [PROBLEM] * 2, [RIGHT, FIRST_WRONG])
    assert [len(e.targets) for e in examples] == [3, 3]
    assert all(y in (0.0, 1 / 3, 2 / 3, 1.0) for e in examples for _, y in e.targets)
    assert [e.targets[-1][1] for e in examples] == [1.0, 0.0]  # the final steps: the completions' own verdicts
    assert labels.cost.continuations == 4 * 3 and labels.cost.tokens > 0  # 4 distinct prefixes x 3

    def no_sampling(*args, **kwargs):
        raise AssertionError("the labels should have come from the cache")

    monkeypatch.setattr(mc_mod, "PolicyCompleter", no_sampling)
    assert labels(TASK, [PROBLEM] * 2, [RIGHT, FIRST_WRONG]) == examples


def test_a_prm_trained_on_mc_labels_scores_wrong_steps_below_right_ones():
    """Right solutions and solutions with one miscalculated step (small problems), labelled by MC with the oracle
    completer; a tiny PRM trained on them scores held-out right steps above wrong ones."""
    task = ArithmeticLinesTask(num_ops_min=1, num_ops_max=2, max_operand=5, train_size=300, heldout_size=10, seed=0)
    rng = random.Random(0)

    def miscalculated(solution: str) -> str:
        lines = solution.split("\n")
        j = rng.randrange(len(lines) - 1)
        lhs, result = lines[j].split("=")
        lines[j] = f"{lhs}={int(result) + rng.choice([-3, -2, -1, 1, 2, 3])}"
        return "\n".join(lines)

    problems = task.train_problems()
    completions = [p.solution if rng.random() < 0.5 else miscalculated(p.solution) for p in problems]
    examples, _ = monte_carlo_labels(task, problems, completions, LineSteps(), Oracle(), n=2, soft=True)
    train, heldout = split_by_prompt(examples, 0.25, torch.Generator().manual_seed(0))
    _, tokenizer = tiny_lm(alphabet=ArithmeticLinesTask.alphabet)
    model = build_reward_model(tokenizer, arch=dict(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128), seed=0)
    metrics = train_reward_model(model, tokenizer, train, heldout, steps=150, batch_size=32, lr=3e-3, seed=0, progress=False)
    scores = score(model, tokenizer, heldout)
    pairs = [(s, y) for e, row in zip(heldout, scores) for (_, y), s in zip(e.targets, row)]
    right = [s for s, y in pairs if y == 1.0]
    wrong = [s for s, y in pairs if y == 0.0]
    assert len(right) > 20 and len(wrong) > 20
    assert sum(right) / len(right) > sum(wrong) / len(wrong) + 0.1, metrics
    assert metrics["auroc"] > 0.7, metrics


def test_the_reward_models_cache_key_follows_the_step_labels():
    policy = tiny_lm(seed=1)[0]
    key = lambda labels: LearnedReward(kind="prm", step_labels=labels).cache_path(TASK, policy)  # noqa: E731
    keys = [key(None), key(MonteCarloStepLabels(LineSteps())), key(MonteCarloStepLabels(LineSteps(), n=4)),
            key(MonteCarloStepLabels(MarkerSteps("\n")))]
    assert len(set(keys)) == 4
    assert LearnedReward(kind="orm").cache_path(TASK, policy) != keys[0]


@pytest.mark.parametrize("extra, words", [
    (["step_labels.n=0"], "step_labels.n=0"),
    (["step_labels.max_steps=0"], "step_labels.max_steps=0"),
    (["steps=regex", "steps.pattern='a*'"], "matches the empty string"),
    (["reward.step_labels=mc"], "step_labels=mc"),  # a value where the group's choice belongs
])
def test_bad_settings_stop_the_run_before_the_policy_loads(extra, words, tmp_path):
    from grpo.pipeline import build
    from grpo_testkit import compose_config

    cfg = compose_config(["reward=model", "supervision=process", "step_labels=mc", f"model.cache_dir={tmp_path}"] + extra,
                         output_dir=tmp_path)
    with pytest.raises(ValueError, match=words):
        build(cfg)
    assert not any(tmp_path.glob("warmstart-*"))  # nothing was built
