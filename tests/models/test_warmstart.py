"""The supervised warm start's data: completions learned, prompts and tool results not (tokenized as the engine
appends them); its cache key follows the tools task's settings and stays as it was for every existing config."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hydra.utils import instantiate

import grpo.models.warmstart as warmstart
from grpo.models.tokenizer import build_char_tokenizer
from grpo.models.warmstart import encode_sft, sft_tensors
from grpo.pipeline import warm_start_key
from grpo.tasks import ArithmeticTask, ArithmeticToolsTask
from grpo.tasks.prompts import FormattedTask, PlainPrompt
from grpo.tools.inline import InlineFormat
from grpo_testkit import compose_config

TOOLS_ALPHABET = ArithmeticToolsTask.alphabet


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer(TOOLS_ALPHABET)


def test_without_results_every_completion_token_is_learned(tokenizer):
    input_ids, attention_mask, labels = encode_sft(tokenizer, [("Q:1+2=", "1+2=3;A:3")])
    ids = tokenizer("Q:1+2=1+2=3;A:3", add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    assert input_ids[0].tolist() == ids and attention_mask[0].tolist() == [1] * 16
    assert labels[0].tolist() == [-100] * 6 + ids[6:]  # prompt "Q:1+2=" (6 chars) not learned


def test_tool_results_are_context_not_labels(tokenizer):
    # prompt Q:1+2= (6 tokens); completion <<1+2=3>>;A:3 : "<<1+2=" (6) learned, "3>>" (3, the tool's) not,
    # ";A:3" (4) learned, then EOS learned
    pair = ("Q:1+2=", "<<1+2=3>>;A:3")
    input_ids, attention_mask, labels = encode_sft(tokenizer, [pair], InlineFormat().result_spans)
    ids = tokenizer("".join(pair), add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    assert input_ids[0].tolist() == ids  # the char tokenizer: tokenized apart or whole, the same ids
    assert labels[0].tolist() == [-100] * 6 + ids[6:12] + [-100] * 3 + ids[15:]
    learned = tokenizer.decode([t for t in labels[0].tolist() if t != -100 and t != tokenizer.eos_token_id])
    assert learned == "<<1+2=;A:3"


def test_rows_of_different_lengths_pad_and_mask(tokenizer):
    pairs = [("Q:1+2=", "<<1+2=3>>;A:3"), ("Q:1+2=", "A:3")]
    input_ids, attention_mask, labels = encode_sft(tokenizer, pairs, InlineFormat().result_spans)
    assert attention_mask[1].tolist() == [1] * 10 + [0] * 10  # 6 + 3 + EOS, then padding
    assert labels[1].tolist()[6:10] == tokenizer("A:3", add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    assert labels[1].tolist()[10:] == [-100] * 10


class WholeStringTokenizer:
    """A stand-in for a BPE tokenizer that merges across a call's boundary: one token per string it is given."""

    eos_token_id, pad_token_id = 1, 0

    def __call__(self, texts, add_special_tokens=False):
        ids = lambda text: [100 + len(text)]  # noqa: E731
        return SimpleNamespace(input_ids=[ids(t) for t in texts] if isinstance(texts, list) else ids(texts))


def test_results_are_tokenized_apart_as_the_engine_appends_them():
    # "<<1+2=" | "3>>" | ";A:3": three pieces of 6, 3 and 4 characters -> tokens 106, 103, 104; the result's masked
    _, _, labels = encode_sft(WholeStringTokenizer(), [("Q:1+2=", "<<1+2=3>>;A:3")], InlineFormat().result_spans)
    assert labels[0].tolist() == [-100, 106, -100, 104, 1]
    input_ids, _, labels = encode_sft(WholeStringTokenizer(), [("Q:1+2=", "<<1+2=3>>;A:3")])  # no spans: one piece
    assert input_ids[0].tolist() == [106, 113, 1] and labels[0].tolist() == [-100, 113, 1]


def test_sft_tensors_mask_the_results_of_a_task_s_calls(tokenizer):
    task = ArithmeticToolsTask(train_size=200, heldout_size=10, tool_share=0.5)
    formatted = FormattedTask(task, PlainPrompt().bind(tokenizer))  # what the warm start is given
    assert formatted.call_format is task.call_format
    pairs = task.sft_examples(64, seed=0)
    input_ids, _, labels = sft_tensors(tokenizer, formatted, 64, seed=0)
    ids = lambda text: tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
    masked_results = 0
    for (prompt, completion), row, label in zip(pairs, input_ids.tolist(), labels.tolist()):
        expected = [-100] * len(prompt) + ids(completion) + [tokenizer.eos_token_id]
        for start, end in task.call_format.result_spans(completion):  # one char, one token
            expected[len(prompt) + start : len(prompt) + end] = [-100] * (end - start)
            masked_results += 1
        assert label[: len(expected)] == expected
    assert masked_results > 30  # about half of ~160 steps are calls


def test_tasks_without_calls_are_encoded_as_before():
    tokenizer = build_char_tokenizer(ArithmeticTask.alphabet)
    task = ArithmeticTask(train_size=200, heldout_size=10)
    before = encode_sft(tokenizer, task.sft_examples(32, seed=0))  # the call train_warm_start made before tools
    after = sft_tensors(tokenizer, task, 32, seed=0)
    assert all(a.equal(b) for a, b in zip(before, after))


def test_the_warm_start_trains_on_the_masked_tensors(monkeypatch, tmp_path, tokenizer):
    from grpo.models.tiny import TinyArch, build_tiny_model

    seen = []
    real = warmstart.encode_sft
    monkeypatch.setattr(warmstart, "encode_sft", lambda tok, pairs, spans=None: seen.append(spans) or real(tok, pairs, spans))
    task = ArithmeticToolsTask(train_size=100, heldout_size=10)
    arch = TinyArch(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_position_embeddings=128)
    model = build_tiny_model(arch.config(tokenizer), seed=0)
    warmstart.train_warm_start(model, tokenizer, task, steps=1, batch_size=2, lr=1e-3, seed=0, log_dir=str(tmp_path))
    assert seen == [task.call_format.result_spans]


# ---- the cache key ------------------------------------------------------------------------------
# The warm-start caches of existing configs, as main computed them before tool use (the lead's cached warm starts):
# tool use must not move them.
EXISTING = {
    (): "warmstart-43b498f2c72e",
    ("debug=default",): "warmstart-efbfdcb95846",
    ("task=arithmetic_lines",): "warmstart-ba4244bbc28d",
    ("model=tiny_debug",): "warmstart-28c96a542221",
}


def cache_name(overrides, tmp_path) -> str:
    cfg = compose_config(list(overrides) + ["model.cache_dir=C"], output_dir=tmp_path)
    return instantiate(cfg.model).cache_path(warm_start_key(cfg)).name


@pytest.mark.parametrize("overrides", list(EXISTING))
def test_existing_configs_keep_their_warm_start_cache(overrides, tmp_path):
    assert cache_name(overrides, tmp_path) == EXISTING[overrides]


def test_the_tools_task_s_warm_start_is_keyed_by_its_tool_share(tmp_path):
    names = {cache_name(o, tmp_path) for o in (["task=arithmetic_tools"], ["task=arithmetic_tools", "task.tool_share=0"],
                                              ["task=arithmetic_tools", "task.tool_share=0.25"])}
    assert len(names) == 3 and not names & set(EXISTING.values())
