"""conf/tools/python.yaml composes with either call format (tools/format=markdown|chat) and its settings reach the
Python tool."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import OmegaConf

from grpo.tools.chat import ChatFormat
from grpo.tools.markdown import MarkdownFormat
from grpo.tools.python import Python
from grpo.tools.sandbox import Limits
from grpo_testkit import CONF_DIR, compose_config


def tools_override(option: str) -> str:
    """`tools=<option>` once train.yaml lists the tools group (its default is `none`), `+tools=<option>` before."""
    listed = any(not isinstance(d, str) and "tools" in d for d in OmegaConf.load(CONF_DIR / "train.yaml").defaults)
    return f"tools={option}" if listed else f"+tools={option}"


def test_python_tools_compose_with_either_format(tmp_path):
    cfg = compose_config([tools_override("python")], output_dir=tmp_path)
    assert cfg.tools._target_ == "grpo.tools.toolbox.Toolbox" and cfg.tools.max_calls == 4
    (tool,) = [instantiate(node) for node in cfg.tools.tools]
    assert isinstance(tool, Python) and tool.limits == Limits(timeout_s=10, cpu_s=5, memory_mb=1024, file_mb=1, max_output_chars=1000)
    markdown = instantiate(cfg.tools.format)
    assert isinstance(markdown, MarkdownFormat) and markdown.tool == tool.name
    cfg = compose_config([tools_override("python"), "tools/format=chat"], output_dir=tmp_path)
    assert isinstance(instantiate(cfg.tools.format), ChatFormat)


def test_chat_prompts_list_the_tools_through_the_pipeline(tmp_path):
    """model=hf prompt=chat tools=python tools/format=chat: the problems the policy sees list the tool in the chat
    template's system turn (pipeline.load_policy / build pass the toolbox to the prompt); tools=none lists nothing."""
    from grpo.models.demo_parts import write_demo_parts
    from grpo.pipeline import load_policy, warm_start_key

    parts = write_demo_parts(tmp_path / "parts", train_size=40, test_size=8, num_ops=1)
    base = ["model=hf", f"model.name_or_path={parts / 'model'}", "task=dataset", f"task.path={parts / 'data' / 'train.parquet'}",
            f"task.heldout_path={parts / 'data' / 'test.parquet'}", "task.solution_column=solution", "prompt=chat"]
    with_tools = compose_config(base + [tools_override("python"), "tools/format=chat"], output_dir=tmp_path / "a")
    without = compose_config(base, output_dir=tmp_path / "b")
    prompt = load_policy(with_tools)[0].train_problems()[0].prompt
    assert '"name": "python"' in prompt and "<tool_call>" in prompt
    plain = load_policy(without)[0].train_problems()[0].prompt
    assert "python" not in plain and prompt.endswith(plain.split("<|im_start|>user")[-1])
    assert warm_start_key(with_tools) != warm_start_key(without)  # a warm start with tools is cached apart


def test_a_toolbox_that_cannot_read_the_tasks_calls_is_refused(tmp_path):
    """task=arithmetic_tools writes inline calls (<<a+b=); tools=python reads code blocks: refused before anything loads."""
    import pytest

    from grpo.checks import ConfigError
    from grpo.pipeline import build

    cfg = compose_config(["task=arithmetic_tools", tools_override("python")], output_dir=tmp_path)
    with pytest.raises(ConfigError, match="writes its calls as InlineFormat, but the toolbox reads MarkdownFormat"):
        build(cfg)
