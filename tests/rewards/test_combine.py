"""grpo.rewards.combine.WeightedRewards: the weighted sum over the components that did not abstain, the
per-component values that are logged, process rewards, and bad values stopped naming the component."""

import math

import pytest

from grpo.rewards.base import RewardError
from grpo.rewards.combine import Component, WeightedRewards, learned_component
from grpo.rewards.verifier import VerifierReward
from grpo.tasks.base import Problem

P = Problem("Q:1+1=", "2", "1+1=2;A:2")
TEXTS = ["a", "bb", "ccc", ""]


def fixed(values):
    """A component returning `values` whatever it is asked."""
    return lambda problems, completions: list(values)


def weighted(**parts):
    """WeightedRewards from name=(values, weight)."""
    return WeightedRewards({name: {"fn": fixed(values), "weight": w} for name, (values, w) in parts.items()})


def test_weighted_sum_over_the_components_that_did_not_abstain():
    reward = weighted(correct=([1.0, 0.0, None, 1.0], 1.0), format=([1.0, 1.0, 1.0, None], 0.5), length=([None, -0.5, None, -1.0], 2.0))
    scores = reward.score([P] * 4, TEXTS)
    # row 0: 1 + 0.5*1 = 1.5;  row 1: 0 + 0.5*1 + 2*(-0.5) = -0.5;  row 2: 0.5*1 = 0.5 (only format spoke);  row 3: 1 + 2*(-1) = -1
    assert scores.rewards == [1.5, -0.5, 0.5, -1.0]
    assert scores.invalid == 0
    # logged as rollout/reward/<name>: each component's mean where it did not abstain
    assert scores.means() == {"correct": pytest.approx(2 / 3), "format": 1.0, "length": -0.75}
    assert scores.components["length"] == [None, -0.5, None, -1.0]


def test_every_component_abstaining_is_an_invalid_value():
    reward = weighted(a=([1.0, None, None, 0.0], 1.0), b=([None, None, 2.0, None], 1.0))
    with pytest.raises(RewardError, match=r"every component \(a, b\) abstained \(returned None\) on 1 completion\(s\): completion 1 \('bb'\)") as err:
        reward.score([P] * 4, TEXTS)
    assert "rollout.invalid_reward=zero" in str(err.value)
    scores = reward.score([P] * 4, TEXTS, invalid="zero")
    assert scores.rewards == [1.0, 0.0, 2.0, 0.0] and scores.invalid == 1  # counted as 0, and counted
    abstains = weighted(a=([None] * 4, 1.0), b=([1.0] * 4, 1.0)).score([P] * 4, TEXTS)
    assert math.isnan(abstains.means()["a"])  # abstained everywhere: NaN, not a made-up 0


@pytest.mark.parametrize("bad", [math.nan, math.inf, "1.0"])
def test_bad_value_stops_naming_the_component_or_counts_as_zero(bad):
    reward = weighted(correct=([1.0] * 4, 1.0), mine=([0.5, bad, 0.5, 0.5], 0.5))
    with pytest.raises(RewardError, match=r"reward mine\.outcome returned 1 value\(s\) that are not finite numbers: completion 1 \('bb'\)") as err:
        reward.score([P] * 4, TEXTS)
    assert repr(bad) in str(err.value)
    scores = reward.score([P] * 4, TEXTS, invalid="zero")
    assert scores.rewards == [1.25, 1.0, 1.25, 1.25] and scores.invalid == 1  # the bad value counts as 0: 1 + 0.5*0


def test_raising_and_wrong_count_always_stop_naming_the_component():
    def down(problems, completions):
        raise ConnectionError("judge server unreachable")

    with pytest.raises(RewardError, match=r"reward judge\.outcome raised ConnectionError: judge server unreachable"):
        WeightedRewards({"judge": {"fn": down}}).score([P] * 4, TEXTS, invalid="zero")
    with pytest.raises(RewardError, match=r"reward short\.outcome returned 3 values for 4 completions"):
        weighted(short=([1.0] * 3, 1.0)).score([P] * 4, TEXTS, invalid="zero")
    with pytest.raises(RewardError, match=r"reward scalar\.outcome returned 1\.0 for 4 completions"):
        WeightedRewards({"scalar": {"fn": lambda p, c: 1.0}}).score([P] * 4, TEXTS)


def test_process_supervision_sums_weighted_steps_and_places_outcome_values_at_the_last_character():
    class Steps:
        def __call__(self, problems, completions):
            return [1.0] * len(completions)

        def steps(self, problems, completions):
            return [[(0, 1.0), (len(t) - 1, 0.0)] if t else [] for t in completions]

    reward = WeightedRewards({"checker": {"fn": Steps(), "weight": 1.0}, "format": {"fn": fixed([1.0, None, 0.0, 1.0]), "weight": 0.5}})
    scores = reward.score([P] * 4, TEXTS, process=True)
    assert scores.steps == [
        [(0, 1.5)],  # "a": the checker's (0, 1.0) and (0, 0.0) fall on one character, + 0.5 * 1.0: 1 + 0 + 0.5
        [(0, 1.0), (1, 0.0)],  # format abstained
        [(0, 1.0), (2, 0.0)],  # format 0.0 at character 2: 0.0 + 0.5 * 0.0
        [],  # the empty completion: no steps, and nowhere to put format's value
    ]
    assert scores.components["checker"] == [0.5, 0.5, 0.5, None]  # its mean step reward per completion
    assert scores.rewards is None


class TwoStepPRM:
    """A step component: steps ending at characters 0 (0.25) and 2 (0.5) of every non-blank completion."""

    def __call__(self, problems, completions):
        return [0.0] * len(completions)

    def steps(self, problems, completions):
        return [[(0, 0.25), (2, 0.5)] if t.strip() else [] for t in completions]


def prm_and_verifier() -> WeightedRewards:
    """reward=prm_verifier's shape: the PRM (weight 1) and a verifier whose outcomes are 1, 0, 1 (weight 2)."""
    return WeightedRewards({"model": {"fn": TwoStepPRM(), "weight": 1.0}, "verifier": {"fn": fixed([1.0, 0.0, 1.0]), "weight": 2.0}})


def test_an_outcome_value_lands_on_the_last_step_of_the_step_components():
    """reward=prm_verifier: the verifier's outcome is the final step's reward, added where the PRM's last step ends
    (not on a trailing newline after it, which would be a step of its own), at the last character without steps."""

    reward = prm_and_verifier()
    scores = reward.score([P] * 3, ["1;2\n", "1;2", "  "], process=True)
    # row 0: step at 2 gets 0.5 + 2 * 1.0 = 2.5 (on 3d22abe the verifier sat at the newline, index 3, a third step)
    assert scores.steps == [[(0, 0.25), (2, 2.5)], [(0, 0.25), (2, 0.5)], [(1, 2.0)]]


def test_outcome_apart_keeps_the_outcome_off_the_steps():
    """An estimator that takes the outcome as a term of its own (supervision=process_min) gets the outcome-only
    components' weighted sum per completion, and step rewards from the step components alone; an outcome
    component alone still gives each completion its one step."""

    reward = prm_and_verifier()
    scores = reward.score([P] * 3, ["1;2\n", "1;2", "  "], process=True, outcome_apart=True)
    assert scores.steps == [[(0, 0.25), (2, 0.5)], [(0, 0.25), (2, 0.5)], []]
    assert scores.outcome == [2.0, 0.0, 2.0]  # 2 * the verifier's value
    assert scores.weights == (1.0, 2.0)  # the step components' total weight, the outcome ones' (decoupled estimators)
    alone = WeightedRewards({"verifier": {"fn": fixed([1.0, 0.0]), "weight": 1.0}})
    scores = alone.score([P] * 2, ["ab", "c"], process=True, outcome_apart=True)
    assert scores.outcome is None and scores.steps == [[(1, 1.0)], [(0, 0.0)]]


def test_components_that_take_ended_get_it():
    seen = {}

    def with_endings(problems, completions, ended=None):
        seen["ended"] = ended
        return [float(e) for e in ended]

    reward = WeightedRewards({"e": {"fn": with_endings}, "plain": {"fn": fixed([0.5, 0.5]), "weight": 1.0}})
    assert reward.score([P] * 2, ["a", "b"], ended=[True, False]).rewards == [1.5, 0.5]
    assert seen["ended"] == [True, False]


def test_prm_verifier_composes_and_the_schedule_finds_its_reward_model(tmp_path):
    """python train.py reward=prm_verifier supervision=process step_labels=mc steps=marker reward.components.verifier.weight=2.0"""
    from hydra.utils import instantiate

    from grpo.rewards.base import supervise
    from grpo.rewards.functions import VerifiedAnswer
    from grpo.rewards.learned.reward import LearnedReward
    from grpo_testkit import compose_config

    cfg = compose_config(["reward=prm_verifier", "supervision=process", "step_labels=mc", "steps=marker",
                          "reward.components.verifier.weight=2.0", "reward.components.model.weight=0.5"], output_dir=tmp_path)
    reward = supervise(instantiate(cfg.reward), True)
    assert {n: c.weight for n, c in reward.components.items()} == {"model": 0.5, "verifier": 2.0}
    assert isinstance(reward.components["verifier"].fn, VerifiedAnswer) and not hasattr(reward.components["verifier"].fn, "steps")
    found = learned_component(reward)
    assert isinstance(found, LearnedReward) and found.kind == "prm"  # rm_schedule=iterative|online retrains it


def test_verifier_alone_is_one_weight_1_component_named_verifier():
    source = VerifierReward()
    reward = WeightedRewards.of(source)
    assert list(reward.components) == ["verifier"] and reward.components["verifier"].fn is source
    assert WeightedRewards.of(reward) is reward


def test_strings_are_imported_and_bad_specs_refused():
    reward = WeightedRewards({"len": {"fn": "builtins.len", "weight": 2}})
    assert reward.components["len"] == Component("len", len, 2.0)
    with pytest.raises(ValueError, match=r"reward\.components\.x\.fn='nowhere\.fn' cannot be imported.*PYTHONPATH"):
        WeightedRewards({"x": {"fn": "nowhere.fn"}})
    with pytest.raises(ValueError, match=r"reward\.components\.x\.weight='high' must be a finite number"):
        WeightedRewards({"x": {"fn": "builtins.len", "weight": "high"}})
    with pytest.raises(ValueError, match=r"reward\.components\.x has unknown keys \['wieght'\]"):
        WeightedRewards({"x": {"fn": "builtins.len", "wieght": 1}})
    with pytest.raises(ValueError, match="must be a reward function"):
        WeightedRewards({"x": {"fn": 3}})
    with pytest.raises(ValueError, match="empty"):
        WeightedRewards({})


class Learner:
    def __init__(self):
        self.weights, self.bound_to = [1.0], None

    def __call__(self, problems, completions):
        return [0.0] * len(completions)

    def bind(self, task, policy=None, tokenizer=None):
        self.bound_to = (task, policy, tokenizer)
        return self

    def retrain(self, examples, **kwargs):
        pass

    def state_dict(self):
        return {"weights": list(self.weights)}

    def load_state_dict(self, state):
        self.weights = state["weights"]


def test_bind_state_and_the_learned_component():
    learner = Learner()
    reward = WeightedRewards({"rm": {"fn": learner, "weight": 0.5}, "format": {"fn": fixed([1.0])}})
    assert reward.bind("task", policy="policy", tokenizer="tok") is reward and learner.bound_to == ("task", "policy", "tok")
    assert learned_component(reward) is learner and learned_component(learner) is learner
    assert learned_component(WeightedRewards.of(VerifierReward())) is None
    assert reward.state_dict() == {"rm": {"weights": [1.0]}}  # checkpoint: keyed by component name
    reward.load_state_dict({"rm": {"weights": [7.0]}})
    assert learner.weights == [7.0]
    with pytest.raises(ValueError, match="retrains one reward model; reward.components has 2: a, b"):
        learned_component(WeightedRewards({"a": {"fn": Learner()}, "b": {"fn": Learner()}}))


def test_dotted_paths_name_what_is_missing():
    with pytest.raises(ValueError, match=r"module 'grpo\.rewards\.functions' has no 'Nope'"):
        WeightedRewards({"x": {"fn": "grpo.rewards.functions.Nope"}})
    with pytest.raises(ValueError, match="not a dotted path"):
        WeightedRewards({"x": {"fn": "len"}})
