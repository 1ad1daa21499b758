"""The prompt group: plain format strings, the tokenizer's chat template (system prompt, conversations, the
generation prompt, the tools' schemas), and the task as the run sees it (FormattedTask)."""

from __future__ import annotations

import json

import pytest

from grpo.models.demo_parts import build_tokenizer
from grpo.models.tokenizer import build_char_tokenizer
from grpo.tasks import ArithmeticTask
from grpo.tasks.base import Problem
from grpo.tasks.prompts import ChatPrompt, FormattedTask, PlainPrompt, tool_schemas


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


from grpo.tools.toolbox import Toolbox  # noqa: E402  (the real one: a stand-in once hid that it keeps {name: tool})


def test_chat_prompt_lists_the_tools_when_their_calls_use_the_templates_format(chat_tokenizer):
    from grpo.tools.chat import ChatFormat
    from grpo.tools.python import Python

    tool = Python()
    schemas = tool_schemas(Toolbox([tool], ChatFormat()))
    assert schemas == [tool.schema]
    text = ChatPrompt(system="Use python.").bind(chat_tokenizer, tools=schemas).render(Problem("What is 2+3?", "5", ""))
    # the demo template's system turn: the system prompt, then the tools as JSON in <tools> tags, then how to call
    assert text.startswith("<|im_start|>system\nUse python.\n\n# Tools\n")
    assert f"<tools>\n{json.dumps(tool.schema)}\n</tools>" in text and "<tool_call>" in text
    assert text.endswith("<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n")


def test_no_tools_listed_for_other_formats_or_no_toolbox(chat_tokenizer):
    from grpo.tools.markdown import MarkdownFormat
    from grpo.tools.python import Python

    assert tool_schemas(None) is None and tool_schemas(Toolbox([Python()], MarkdownFormat())) is None
    # no schemas: the same text as before tools existed
    assert ChatPrompt().bind(chat_tokenizer, tools=None).render(Problem("2+3?", "5", "")) == \
        "<|im_start|>user\n2+3?<|im_end|>\n<|im_start|>assistant\n"


def test_a_tool_without_a_schema_is_a_clear_error():
    from grpo.tools.chat import ChatFormat

    class Bare:
        name = "bare"

        def __call__(self, arguments):
            return arguments, False

    with pytest.raises(ValueError, match=r"\['bare'\] have no `schema`: give the tool class a `schema` property"):
        tool_schemas(Toolbox([Bare()], ChatFormat()))


def test_the_pipeline_binds_the_prompt_with_the_toolboxs_schemas(chat_tokenizer):
    from grpo.pipeline import formatted_task
    from grpo.tools.chat import ChatFormat
    from grpo.tools.python import Python

    class Source:
        def tokenizer(self, task):
            return chat_tokenizer

    task = ArithmeticTask(num_ops_min=1, num_ops_max=1, max_operand=9, train_size=5, heldout_size=2, seed=0)
    with_tools = formatted_task(task, ChatPrompt(), Source(), toolbox=Toolbox([Python()], ChatFormat()))
    without = formatted_task(task, ChatPrompt(), Source())
    assert "# Tools" in with_tools.heldout_problems()[0].prompt
    assert without.heldout_problems()[0].prompt == "<|im_start|>user\n" + task.heldout_problems()[0].prompt + \
        "<|im_end|>\n<|im_start|>assistant\n"


def test_the_demo_template_renders_tool_calls_and_tool_turns_qwen_style(chat_tokenizer):
    messages = [{"role": "user", "content": "2**10?"},
                {"role": "assistant", "content": "Let me run it.",
                 "tool_calls": [{"type": "function", "function": {"name": "python", "arguments": {"code": "2**10"}}}]},
                {"role": "tool", "content": "1024"}, {"role": "assistant", "content": "1024."}]
    assert chat_tokenizer.apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>user\n2**10?<|im_end|>\n"
        '<|im_start|>assistant\nLet me run it.\n<tool_call>\n{"name": "python", "arguments": {"code": "2**10"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n1024\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n1024.<|im_end|>\n")


def test_the_demo_template_without_tools_renders_as_the_plain_chatml_one(chat_tokenizer):
    chatml = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
              "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")  # the template before tools
    conversations = [[{"role": "user", "content": "2+3?"}],
                     [{"role": "system", "content": "S"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                      {"role": "system", "content": "again"}, {"role": "user", "content": "c"}]]
    for messages in conversations:
        for generation_prompt in (True, False):
            assert chat_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt) == \
                chat_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt, chat_template=chatml)
