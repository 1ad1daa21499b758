"""How a problem becomes the text the policy sees: the `prompt` config group.

- `PlainPrompt` (prompt=plain, the default): a format string over the task's prompt text, for base
  models and the built-in tiny model (`"{prompt}"`, the default, leaves it as the task wrote it).
- `ChatPrompt` (prompt=chat): the tokenizer's chat template over the problem's conversation (a user
  turn holding the task's prompt text, or the row's own messages), with an optional system prompt and
  the generation prompt added, for instruct models. When the tools' calls use the template's own format
  (tools.format=chat), their schemas go to the template (`apply_chat_template(tools=...)`), which lists
  them in its system turn; `tool_schemas(toolbox)` says which.

`FormattedTask(task, prompt)` is the task as the rest of the run sees it: its problems' `prompt` is
the rendered text (the warm start's prompts too); its checkers get the task's own problems back.
"""

from __future__ import annotations

from dataclasses import replace

from grpo.tasks.base import Problem, Task, verified


def tool_schemas(toolbox) -> list[dict] | None:
    """The schemas (OpenAI function dicts) the chat template lists, or None: only tools called in the template's
    own format (grpo.tools.chat.ChatFormat) are described there; other formats are taught by the prompt or the warm start."""
    from grpo.tools.chat import ChatFormat

    if toolbox is None or not isinstance(toolbox.format, ChatFormat):
        return None
    tools = list(toolbox.tools.values())  # Toolbox.tools: {name: tool}
    missing = [getattr(tool, "name", repr(tool)) for tool in tools if not isinstance(getattr(tool, "schema", None), dict)]
    if missing:
        raise ValueError(f"tools.format=chat lists every tool in the chat template, and {missing} have no `schema`: give the "
                         "tool class a `schema` property returning {'type': 'function', 'function': {'name': ..., "
                         "'description': ..., 'parameters': {...JSON schema...}}}")
    return [tool.schema for tool in tools]


def conversation(problem: Problem) -> list[dict]:
    """The problem as chat messages: its own `messages`, or one user turn holding its prompt text."""
    if problem.messages:
        return [dict(m) for m in problem.messages]
    return [{"role": "user", "content": problem.prompt}]


class PlainPrompt:
    """`template.format(prompt=<the task's prompt text>)`, e.g. template="Question: {prompt}\\nAnswer:"."""

    def __init__(self, template: str = "{prompt}"):
        try:
            template.format(prompt="")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(
                f"prompt.template={template!r} is not a format string over {{prompt}} ({type(err).__name__}: {err}); "
                "write the question's place as {prompt}, e.g. prompt.template='Question: {prompt}\\nAnswer:' "
                "(literal braces doubled: {{ }})"
            ) from None
        self.template = template

    def bind(self, tokenizer, tools: list[dict] | None = None) -> "PlainPrompt":
        """`tools` is always None here (tool_schemas gives schemas only to the chat template's own call format)."""
        return self

    def render(self, problem: Problem) -> str:
        return self.template.format(prompt=problem.prompt)


class ChatPrompt:
    """The tokenizer's chat template; `system`: a system prompt put first (unless the row has its own)."""

    def __init__(self, system: str | None = None):
        self.system = system
        self.tokenizer = None
        self.tools: list[dict] | None = None  # the tools' schemas the template lists (bind's `tools`)

    def bind(self, tokenizer, tools: list[dict] | None = None) -> "ChatPrompt":
        if not getattr(tokenizer, "chat_template", None):
            name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
            raise ValueError(
                f"prompt=chat needs a tokenizer with a chat template, and {name!r} has none (a base model's, or the "
                "built-in tiny model's). Use prompt=plain (optionally prompt.template='...{prompt}...'), or a tokenizer "
                "that ships one (an -Instruct / -Chat model), or set tokenizer.chat_template in that directory's "
                "tokenizer_config.json."
            )
        self.tokenizer, self.tools = tokenizer, (list(tools) if tools else None)
        return self

    def render(self, problem: Problem) -> str:
        if self.tokenizer is None:
            raise RuntimeError("ChatPrompt.render before bind(tokenizer)")
        messages = conversation(problem)
        if self.system and messages[0].get("role") != "system":
            messages = [{"role": "system", "content": self.system}] + messages
        listed = {"tools": self.tools} if self.tools else {}  # tools=none: the call is as it always was
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **listed)


class FormattedTask(Task):
    """`task` with every problem's prompt rendered by `prompt` (bound to the policy's tokenizer).

    Checkers (`verify`, `step_rewards`, `extract_answer`) and any other attribute are the task's own;
    `verify` and `step_rewards` receive the task's original problem, so a task may parse its own prompt.
    """

    def __init__(self, task: Task, prompt):
        self.task, self.prompt = task, prompt
        self.alphabet, self.call_format = task.alphabet, getattr(task, "call_format", None)
        self._original: dict[Problem, Problem] = {}
        self._rendered: dict[str, Problem] = {}
        self._splits: tuple[list[Problem], list[Problem]] | None = None

    def __getattr__(self, name):  # the task's own attributes (e.g. its settings) stay reachable
        if name == "task":
            raise AttributeError(name)
        return getattr(self.task, name)

    def _render(self, problem: Problem) -> Problem:
        rendered = replace(problem, prompt=self.prompt.render(problem))
        self._original[rendered] = problem
        self._rendered.setdefault(problem.prompt, rendered)
        return rendered

    def _problems(self) -> tuple[list[Problem], list[Problem]]:
        if self._splits is None:
            self._splits = ([self._render(p) for p in self.task.train_problems()],
                            [self._render(p) for p in self.task.heldout_problems()])
        return self._splits

    def train_problems(self) -> list[Problem]:
        return list(self._problems()[0])

    def heldout_problems(self) -> list[Problem]:
        return list(self._problems()[1])

    def sft_examples(self, n: int, seed: int) -> list[tuple[str, str]]:
        """The task's warm-start pairs with their prompts rendered (a prompt outside the train split: as one user turn)."""
        self._problems()
        return [(self._prompt_of(p), c) for p, c in self.task.sft_examples(n, seed)]

    def _prompt_of(self, prompt_text: str) -> str:
        known = self._rendered.get(prompt_text)
        return known.prompt if known is not None else self.prompt.render(Problem(prompt_text, "", ""))

    def original(self, problem: Problem) -> Problem:
        """The task's own problem behind a rendered one (itself if it is not one of ours)."""
        return self._original.get(problem, problem)

    def extract_answer(self, completion: str) -> str | None:
        return self.task.extract_answer(completion)

    def verify(self, problem: Problem, completion: str) -> bool:
        return verified(self.task, self.original(problem), completion)  # a non-bool is named with the task's own class

    def step_rewards(self, problem: Problem, completion: str) -> list[tuple[int, float]]:
        return self.task.step_rewards(self.original(problem), completion)
