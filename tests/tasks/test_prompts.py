"""The prompt group: plain format strings, the tokenizer's chat template (system prompt, conversations, the
generation prompt), and the task as the run sees it (FormattedTask)."""

from __future__ import annotations

import pytest

from grpo.models.demo_parts import build_tokenizer
from grpo.models.tokenizer import build_char_tokenizer
from grpo.tasks import ArithmeticTask
from grpo.tasks.base import Problem
from grpo.tasks.prompts import ChatPrompt, FormattedTask, PlainPrompt


@pytest.fixture(scope="module")
def chat_tokenizer():
    return build_tokenizer(["What is 2+3?", "2+3=5", "The answer is \\boxed{5}."], vocab_size=300)


def test_plain_template_wraps_the_task_text():
    assert PlainPrompt().render(Problem("Q:1+2=", "3", "")) == "Q:1+2="
    assert PlainPrompt("Question: {prompt}\nAnswer:").render(Problem("What is 2+3?", "5", "")) == "Question: What is 2+3?\nAnswer:"


@pytest.mark.parametrize("template", ["Question: {question}", "{prompt} {0}", "{prompt"])
def test_a_bad_plain_template_says_how_to_write_it(template):
    with pytest.raises(ValueError, match=r"not a format string over \{prompt\}"):
        PlainPrompt(template)


def test_chat_template_with_system_prompt_and_generation_prompt(chat_tokenizer):
    prompt = ChatPrompt(system="Reason step by step.").bind(chat_tokenizer)
    text = prompt.render(Problem("What is 2+3?", "5", ""))
    assert text == ("<|im_start|>system\nReason step by step.<|im_end|>\n"
                    "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n")


def test_a_conversation_row_keeps_its_own_turns(chat_tokenizer):
    messages = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+3?"})
    text = ChatPrompt(system="ignored: the row has its own").bind(chat_tokenizer).render(Problem("2+3?", "5", "", messages=messages))
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+3?")
    assert "ignored" not in text and text.endswith("<|im_start|>assistant\n")


def test_a_tokenizer_without_chat_template_is_a_clear_error():
    with pytest.raises(ValueError, match="prompt=chat needs a tokenizer with a chat template.*Use prompt=plain"):
        ChatPrompt().bind(build_char_tokenizer("0123456789"))


def test_formatted_task_renders_problems_and_warm_start_prompts_and_checks_with_the_originals(chat_tokenizer):
    task = ArithmeticTask(num_ops_min=1, num_ops_max=1, max_operand=9, train_size=20, heldout_size=5, seed=0)
    formatted = FormattedTask(task, PlainPrompt("Solve {prompt}"))
    problem = formatted.heldout_problems()[0]
    original = task.heldout_problems()[0]
    assert problem.prompt == "Solve " + original.prompt and problem.answer == original.answer
    # the arithmetic checkers parse the task's own prompt: they get the original problem back
    assert formatted.step_rewards(problem, original.solution) == task.step_rewards(original, original.solution)
    assert formatted.verify(problem, original.solution)
    assert all(p.startswith("Solve Q:") for p, _ in formatted.sft_examples(4, seed=1))
    assert [c for _, c in formatted.sft_examples(4, seed=1)] == [c for _, c in task.sft_examples(4, seed=1)]
    assert formatted.alphabet == task.alphabet and formatted.num_ops_max == 1  # the task's own attributes
