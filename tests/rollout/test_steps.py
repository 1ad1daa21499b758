"""grpo.rollout.steps: step-end token positions in O(T) equal the prefix rule (decode every prefix) on the char
tokenizer and on a byte-level BPE tokenizer trained here (multi-byte characters split across tokens, special
tokens inside), on 2,000-token completions; the tokenizer is called a bounded number of times. A row that stopped
has its last step end on its EOS token, so every process estimator trains stopping."""

from __future__ import annotations

import random

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from grpo.algo.advantages import ProcessAdvantages
from grpo.algo.process_min import ProcessMinAdvantages
from grpo.algo.process_progress import ProcessProgressAdvantages
from grpo.models.tokenizer import build_char_tokenizer
from grpo.rollout import steps as steps_mod
from grpo.rollout.steps import char_to_token, chars_to_tokens, prefix_token_ends, step_reward_tensors, token_ends
from grpo.tasks import ArithmeticTask

CORPUS = [
    "7*3=21\n21+12=33\n33-5=28\n#### 28",
    "Natalia sold 48/2 = 24 clips in May. Le café coûte 5 € ; naïve façade, 日本語のテキスト, emoji 😀🎉 ok.",
    "Step 1: 12+5=17. Step 2: 17-3=14. The answer is 14.",
] * 20


class Counting:
    """A tokenizer proxy counting batch_decode calls and the tokens they decode."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls, self.tokens = tokenizer, 0, 0

    def batch_decode(self, sequences, **kwargs):
        self.calls += 1
        self.tokens += sum(len(s) for s in sequences)
        return self.tokenizer.batch_decode(sequences, **kwargs)


@pytest.fixture(scope="module")
def bpe() -> PreTrainedTokenizerFast:
    """A byte-level BPE (GPT-2 style) trained offline: 256 byte tokens, merges, two special tokens."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")


def completion(tokenizer, n: int, seed: int) -> list[int]:
    """`n` ids: real text's tokens mixed with random ids (lone bytes of multi-byte characters, special tokens)."""
    rng = random.Random(seed)
    text_ids = tokenizer("".join(CORPUS), add_special_tokens=False).input_ids
    vocab = len(tokenizer)
    ids: list[int] = []
    while len(ids) < n:
        start = rng.randrange(len(text_ids))
        ids += text_ids[start : start + rng.randint(1, 30)]
        ids += [rng.randrange(vocab) for _ in range(rng.randint(0, 5))]
    return ids[:n]


def test_bpe_really_splits_characters(bpe):
    ids = completion(bpe, 2000, seed=0)
    text = bpe.decode(ids, skip_special_tokens=True)
    assert "\ufffd" in text  # a multi-byte character cut by a random byte token
    assert any(i in bpe.all_special_ids for i in ids)
    assert len(text) > 1000


@pytest.mark.parametrize("seed", [0, 1])
def test_bpe_ends_equal_the_prefix_rule_in_linear_work(bpe, seed):
    ids = completion(bpe, 2000, seed)
    want = prefix_token_ends(bpe, ids)
    counting = Counting(bpe)
    assert token_ends(counting, ids) == want
    assert counting.calls == 1  # one batch of windows and the whole sequence; no fallback
    # each token is decoded in at most (BLOCK + 1) windows of <= CONTEXT + BLOCK tokens per BLOCK tokens, plus the whole
    per_token = (steps_mod.BLOCK + 1) * (steps_mod.CONTEXT + steps_mod.BLOCK) / steps_mod.BLOCK
    assert counting.tokens <= per_token * len(ids) + len(ids)  # the prefix rule decodes 2,001,000 tokens here


def test_char_tokenizer_ends_equal_the_prefix_rule(bpe):
    tok = build_char_tokenizer(ArithmeticTask.alphabet + "\n# ")
    rng = random.Random(3)
    ids = [rng.randrange(len(tok)) for _ in range(2000)]  # specials (pad, bos, eos, unk) decode to nothing
    counting = Counting(tok)
    assert token_ends(counting, ids) == prefix_token_ends(tok, ids)
    assert counting.calls == 1
    assert token_ends(tok, []) == []
    short = tok("7*3=21;", add_special_tokens=False).input_ids
    assert token_ends(tok, short) == [1, 2, 3, 4, 5, 6, 7]


def test_a_decoder_that_is_not_local_falls_back_to_the_rule():
    class Parity:
        """Decodes each id to 'a', plus a '!' when the sequence has an odd length: no window sees that."""

        def batch_decode(self, sequences, skip_special_tokens=True):
            return ["a" * len(s) + "!" * (len(s) % 2) for s in sequences]

    ids = list(range(50))
    assert token_ends(Parity(), ids) == prefix_token_ends(Parity(), ids)


def test_chars_to_tokens_answers_like_char_to_token():
    ends = [1, 3, 3, 2, 6, 7, 7]  # not monotone (a clean-up that removes a space)
    queries = [5, 0, 2, 6, 7, 2, -1]
    assert chars_to_tokens(ends, queries) == [char_to_token(ends, q) for q in queries] == [4, 0, 1, 5, None, 1, 0]
    assert chars_to_tokens([], [0]) == [None]


# ---- endings: the EOS token carries the final step's advantage ---------------------------------------------------
def test_a_stopped_rows_eos_token_carries_its_last_steps_advantage():
    """Char tokenizer (one token per character, then EOS, then padding). Rows 0, 1 and 3 stopped with EOS, row 2 was
    cut by the length limit. For every process estimator the EOS token gets the advantage of the last step's last
    character, and it is not 0, so stopping is trained; a cut row's tokens after its last step stay at 0."""
    tok = build_char_tokenizer(ArithmeticTask.alphabet)
    texts = ["7*3=21;21+12=33;A:33", "7*3=21;21+12=34;A:34", "7*3=21;21+1", "7*3=21;A:21"]
    ended = torch.tensor([True, True, False, True])
    rows = [tok(t, add_special_tokens=False).input_ids + ([tok.eos_token_id] if e else []) for t, e in zip(texts, ended)]
    T = max(map(len, rows)) + 2
    completion_ids = torch.full((4, T), tok.pad_token_id)
    completion_mask = torch.zeros(4, T, dtype=torch.bool)
    for i, r in enumerate(rows):
        completion_ids[i, : len(r)], completion_mask[i, : len(r)] = torch.tensor(r), True
    # (last character of the step, its reward): the char indices of ';' ';' and the answer's last digit
    steps = [[(6, 0.5), (15, 0.9), (19, 1.0)], [(6, 0.5), (15, 0.4), (19, 0.1)], [(6, 0.5)], [(6, 0.6), (10, 0.2)]]
    step_rewards, step_end_mask = step_reward_tensors(tok, completion_ids, completion_mask, steps, ended=ended)
    # rows 0, 1: 20 characters + EOS at token 20; row 3: 11 characters + EOS at token 11; row 2 (cut): step at token 6
    assert [step_end_mask[i].nonzero().flatten().tolist() for i in range(4)] == [[6, 15, 20], [6, 15, 20], [6], [6, 11]]
    assert step_rewards[0, 20] == 1.0 and step_rewards[1, 20] == 0.1 and step_rewards[3, 11] == 0.2
    for estimator in (ProcessAdvantages(), ProcessMinAdvantages(), ProcessProgressAdvantages()):
        adv = estimator(None, 2, step_rewards, step_end_mask)  # [4, T]
        for i, (last_char, eos) in {0: (19, 20), 1: (19, 20), 3: (10, 11)}.items():
            assert adv[i, eos] == adv[i, last_char] != 0, (type(estimator).__name__, i)
            assert torch.equal(adv[i, eos + 1 :], torch.zeros(T - eos - 1))  # padding after the EOS
        assert torch.equal(adv[2, 7:], torch.zeros(T - 7))  # the cut row: nothing after its last step


def test_step_reward_tensors_needs_one_ended_flag_per_row():
    tok = build_char_tokenizer(ArithmeticTask.alphabet)
    with pytest.raises(ValueError, match=r"ended must be \[N\] = \[2\]"):
        step_reward_tensors(tok, torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool), [[], []],
                            ended=torch.ones(3, dtype=torch.bool))
