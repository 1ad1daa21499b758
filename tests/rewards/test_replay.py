"""grpo.rewards.replay: the replay share on counts, sampling, capacity, checkpoint round trip."""

import pytest
import torch

from grpo.rewards.replay import ReplayBuffer, replay_count


@pytest.mark.parametrize(
    "n_fresh, share, expected",
    [
        (90, 0.1, 10),  # 10 / (90 + 10) = 0.1
        (900, 0.1, 100),
        (45, 0.1, 5),  # 5 / 50
        (80, 0.2, 20),  # 20 / 100
        (7, 0.1, 1),  # 0.1 * 7 / 0.9 = 0.78 -> 1 (1 / 8 = 0.125: the nearest count)
        (90, 0.0, 0),
        (0, 0.1, 0),
    ],
)
def test_replay_count(n_fresh, share, expected):
    assert replay_count(n_fresh, share) == expected


@pytest.mark.parametrize("share", [-0.1, 1.0, 1.5])
def test_replay_share_out_of_range(share):
    with pytest.raises(ValueError, match="replay share"):
        replay_count(10, share)


def test_mix_has_the_configured_share_on_counts():
    buffer = ReplayBuffer()
    buffer.add([("old", i) for i in range(500)])
    fresh = [("new", i) for i in range(90)]
    mixed = buffer.mix(fresh, 0.1, torch.Generator().manual_seed(0))
    replayed = [x for x in mixed if x[0] == "old"]
    assert mixed[:90] == fresh  # every fresh example, once
    assert len(replayed) == 10 and len(mixed) == 100  # 10 / 100 = the share
    assert len(set(replayed)) == 10  # drawn without replacement


def test_mix_with_empty_or_short_history():
    fresh = list(range(90))
    assert ReplayBuffer().mix(fresh, 0.1) == fresh  # no history: nothing replayed
    short = ReplayBuffer()
    short.add(["a", "b", "c"])
    mixed = short.mix(fresh, 0.1)  # wants 10, has 3: all of them
    assert len(mixed) == 93 and sorted(mixed[90:]) == ["a", "b", "c"]


def test_mix_is_seeded():
    buffer = ReplayBuffer()
    buffer.add(range(1000))
    draw = lambda seed: buffer.mix([], 0.5, torch.Generator().manual_seed(seed)) + buffer.mix(list(range(50)), 0.5, torch.Generator().manual_seed(seed))
    assert draw(1) == draw(1)
    assert draw(1) != draw(2)


def test_capacity_keeps_a_uniform_sample_and_resumes_exactly():
    full = ReplayBuffer(capacity=100, seed=3)
    full.add(range(1000))
    assert len(full) == 100 and full.seen == 1000
    # a reservoir keeps each item with probability 100 / 1000: about half of the kept items come from the second half
    assert 30 <= sum(x >= 500 for x in full.items) <= 70

    first = ReplayBuffer(capacity=100, seed=3)
    first.add(range(400))
    resumed = ReplayBuffer()
    resumed.load_state_dict(first.state_dict())
    resumed.add(range(400, 1000))
    assert resumed.items == full.items


def test_state_dict_round_trip_is_plain():
    buffer = ReplayBuffer()
    buffer.add([["Q:1+1=", "A:2", [[2, 1.0]]]])
    state = buffer.state_dict()
    copy = ReplayBuffer()
    copy.load_state_dict(state)
    assert copy.items == buffer.items and copy.seen == 1
    assert isinstance(state["items"][0], list)  # plain values: loads under torch.load(weights_only=True)
