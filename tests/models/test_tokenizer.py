"""grpo.models.tokenizer.build_char_tokenizer: one token per character, special tokens, unknowns,
save/load round trip through transformers' AutoTokenizer, left padding."""

from __future__ import annotations

import string

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from grpo.models.tokenizer import SPECIAL_TOKENS, build_char_tokenizer
from grpo.tasks import ArithmeticTask, GSM8KTask
from grpo_testkit import GSM8K_FIXTURE

ALPHABET = ArithmeticTask.alphabet


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return build_char_tokenizer(ALPHABET)


@pytest.fixture(scope="module")
def task_strings() -> list[str]:
    task = ArithmeticTask(train_size=20, heldout_size=5, seed=2)
    problems = task.train_problems() + task.heldout_problems()
    return [p.prompt for p in problems] + [p.solution for p in problems]


def test_vocabulary_is_specials_then_each_distinct_char(tok):
    assert len(tok) == len(SPECIAL_TOKENS) + len(set(ALPHABET))
    specials = [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id]
    assert len(set(specials)) == 4
    assert [tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    char_ids = [tok.convert_tokens_to_ids(c) for c in ALPHABET]
    assert len(set(char_ids)) == len(ALPHABET) and not set(char_ids) & set(specials)
    # duplicates in the alphabet do not create duplicate tokens
    assert len(build_char_tokenizer(ALPHABET + ALPHABET[:5])) == len(tok)


def test_round_trip_one_token_per_char(tok, task_strings):
    for text in task_strings:
        ids = tok(text, add_special_tokens=False).input_ids
        assert len(ids) == len(text)
        assert ids == [tok.convert_tokens_to_ids(c) for c in text]
        assert tok.decode(ids) == text
    enc = tok(task_strings, add_special_tokens=False).input_ids
    assert tok.batch_decode(enc) == task_strings


def test_special_tokens_are_dropped_by_skip_special_tokens(tok):
    text = "7*3=21;A:21"
    ids = tok(text, add_special_tokens=False).input_ids
    padded = [tok.bos_token_id] + ids + [tok.eos_token_id, tok.pad_token_id, tok.pad_token_id]
    assert tok.decode(padded, skip_special_tokens=True) == text
    assert tok.decode(padded) == "<bos>" + text + "<eos><pad><pad>"
    assert tok(text, add_special_tokens=False).input_ids == tok(text).input_ids  # nothing is added silently


def test_unknown_char_maps_to_unk(tok):
    ids = tok("Q:7x3=", add_special_tokens=False).input_ids
    assert len(ids) == 6
    assert ids[3] == tok.unk_token_id
    assert ids[:3] == tok("Q:7", add_special_tokens=False).input_ids
    assert tok.decode(ids, skip_special_tokens=True) == "Q:73="


def test_save_pretrained_then_auto_tokenizer_gives_identical_ids(tok, task_strings, tmp_path):
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.get_vocab() == tok.get_vocab()
    for name in ("pad_token_id", "bos_token_id", "eos_token_id", "unk_token_id", "padding_side"):
        assert getattr(loaded, name) == getattr(tok, name), name
    texts = task_strings + ["Q:7x3=", ""]
    assert loaded(texts, add_special_tokens=False).input_ids == tok(texts, add_special_tokens=False).input_ids
    batch = loaded(texts[:4], padding=True, return_tensors="pt", add_special_tokens=False)
    ref = tok(texts[:4], padding=True, return_tensors="pt", add_special_tokens=False)
    assert batch.input_ids.equal(ref.input_ids) and batch.attention_mask.equal(ref.attention_mask)
    assert loaded.batch_decode(ref.input_ids, skip_special_tokens=True) == texts[:4]


def test_left_padding(tok):
    prompts = ["Q:1+2=", "Q:12*3+45=", "Q:9-1="]
    enc = tok(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
    width = max(map(len, prompts))
    assert enc.input_ids.shape == (3, width)
    for row, ids, mask, text in zip(range(3), enc.input_ids, enc.attention_mask, prompts):
        n_pad = width - len(text)
        assert mask.tolist() == [0] * n_pad + [1] * len(text), row
        assert ids[:n_pad].tolist() == [tok.pad_token_id] * n_pad
        assert tok.decode(ids[n_pad:]) == text
        assert tok.decode(ids, skip_special_tokens=True) == text


def test_printable_alphabet_round_trips_gsm8k_text():
    """The tiny model on task=gsm8k uses string.printable: questions and solutions survive encoding."""
    tok = build_char_tokenizer(string.printable)
    task = GSM8KTask(str(GSM8K_FIXTURE), heldout_fraction=0.25, seed=0)
    for p in task.train_problems() + task.heldout_problems():
        for text in (p.prompt, " " + p.solution):
            ids = tok(text, add_special_tokens=False).input_ids
            assert tok.convert_tokens_to_ids("<unk>") not in ids, text
            assert tok.decode(ids) == text


@pytest.mark.parametrize("text", ["line one\n\nline two", "a\n\n\nb"])
def test_consecutive_newlines_round_trip(text):
    tok = build_char_tokenizer(string.printable)
    ids = tok(text, add_special_tokens=False).input_ids
    assert len(ids) == len(text)
    assert tok.decode(ids) == text
