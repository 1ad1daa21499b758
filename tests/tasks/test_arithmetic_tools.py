"""ArithmeticToolsTask: larger operands, hand steps with column carry/borrow flaws, a share of calculator calls, and
checkers that read transcripts with calls."""

from __future__ import annotations

import random
import re

import pytest

from grpo.models.tokenizer import build_char_tokenizer
from grpo.tasks import ArithmeticLinesTask, ArithmeticTask, ArithmeticToolsTask, Problem
from grpo.tasks.arithmetic_tools import hand_result
from grpo.tools.calculator import Calculator

# 512+347=859; 859-289=570
EXAMPLE = Problem("Q:512+347-289=", "570", "512+347=859;859-289=570;A:570")
STEP_RE = re.compile(r"(<<)?(-?\d+)([-+])(\d+)=(-?\d+)(>>)?")


@pytest.fixture(scope="module")
def task() -> ArithmeticToolsTask:
    return ArithmeticToolsTask(train_size=2000, heldout_size=200, seed=1)


def never() -> bool:
    return False


def always() -> bool:
    return True


@pytest.mark.parametrize(
    "op, a, b, forget, expected",
    [
        ("+", 512, 347, always, 859),  # no column carries: nothing to forget
        ("+", 95, 7, never, 102),  # 5+7=12 carry; 9+0+1=10 carry; 0+0+1=1
        ("+", 95, 7, always, 92),  # units 12 -> 2, carry forgotten; tens 9+0 = 9: 92
        ("+", 600, 500, always, 100),  # hundreds 6+5=11 -> 1; the carry into the thousands forgotten: 100
        ("+", 999, 1, always, 990),  # 9+1=10 -> 0, carry forgotten; 9, 9: 990
        ("-", 302, 7, never, 295),  # 2-7 borrows; 0-0-1 borrows; 3-0-1=2: 295
        ("-", 302, 7, always, 305),  # units 2-7 -> 5, borrow forgotten; tens 0-0 = 0; hundreds 3: 305
        ("-", 7, 302, never, -295),  # a < b: -(302-7)
        ("-", 859, 289, never, 570),
        ("*", 12, 34, always, 408),  # * is exact
        ("+", -5, 17, always, 12),  # a negative operand (a flawed value): exact
    ],
)
def test_hand_result(op, a, b, forget, expected):
    assert hand_result(op, a, b, forget) == expected


def test_hand_result_asks_only_at_carries():
    asked = []
    hand_result("+", 95, 7, lambda: asked.append(1) or False)  # carries into tens and hundreds
    assert len(asked) == 2
    asked.clear()
    hand_result("+", 512, 347, lambda: asked.append(1) or False)  # 2+7, 1+4, 5+3: no carry
    assert asked == []


def test_problems_have_large_operands_and_values_in_range(task):
    for problem in task.train_problems()[:500] + task.heldout_problems():
        numbers = [int(n) for n in re.findall(r"\d+", problem.prompt)]
        assert all(100 <= n <= 999 for n in numbers), problem.prompt
        value = numbers[0]
        for op, b in re.findall(r"([-+])(\d+)", problem.prompt[2 + len(str(numbers[0])) :]):
            value = value + int(b) if op == "+" else value - int(b)
            assert 0 <= value <= 9999, problem.prompt
        assert str(value) == problem.answer and task.verify(problem, problem.solution)


def test_solution_steps_are_calls_with_the_calculator_s_result_or_by_hand(task):
    calls = hand = 0
    rng = random.Random(0)
    for problem in task.train_problems()[:300]:
        solution = task.flawed_solution(problem, rng)
        *steps, answer = solution.split(";")
        for step in steps:
            m = STEP_RE.fullmatch(step)
            assert m and bool(m.group(1)) == bool(m.group(6)), step
            a, op, b, c = int(m.group(2)), m.group(3), int(m.group(4)), int(m.group(5))
            if m.group(1):  # a call: the result is exactly the calculator's output
                calls += 1
                assert (str(c), False) == Calculator()(f"{a}{op}{b}")
            else:
                hand += 1
        assert answer == f"A:{c}"  # the answer is the last step's value (a flaw propagates)
    assert 0.4 < calls / (calls + hand) < 0.6  # tool_share=0.5


def test_tool_share_zero_and_one():
    rng = random.Random(0)
    no_tools = ArithmeticToolsTask(train_size=300, heldout_size=10, tool_share=0.0)
    all_tools = ArithmeticToolsTask(train_size=300, heldout_size=10, tool_share=1.0, flaw_prob=1.0)
    assert not any("<<" in c for _, c in no_tools.sft_examples(200, seed=0))
    for problem in all_tools.train_problems()[:100]:
        solution = all_tools.flawed_solution(problem, rng)
        assert solution.count("<<") == solution.count(";")  # every step a call
        assert all_tools.verify(problem, solution)  # calls are exact, whatever flaw_prob


def test_flaws_make_hand_steps_wrong():
    clean = ArithmeticToolsTask(train_size=300, heldout_size=10, tool_share=0.0, flaw_prob=0.0)
    flawed = ArithmeticToolsTask(train_size=300, heldout_size=10, tool_share=0.0, flaw_prob=1.0)
    problems = clean.train_problems()
    rng = random.Random(0)
    assert all(clean.verify(p, clean.flawed_solution(p, rng)) for p in problems)
    wrong = sum(not flawed.verify(p, flawed.flawed_solution(p, rng)) for p in problems)
    assert wrong > 0.7 * len(problems)  # 3-digit sums and differences carry or borrow most of the time


def test_step_rewards_read_calls_as_steps(task):
    # <<512+347=859>>;  ';' at 15;  859-289=570;  ';' at 27;  A:570  '0' at 32
    assert task.step_rewards(EXAMPLE, "<<512+347=859>>;859-289=570;A:570") == [(15, 1.0), (27, 1.0), (32, 1.0)]
    # 512+347=849;  ';' at 11 (wrong: 859);  <<849-289=560>>;  ';' at 27: a right step from its own value; A:560 wrong
    assert task.step_rewards(EXAMPLE, "512+347=849;<<849-289=560>>;A:560") == [(11, 0.0), (27, 1.0), (32, 0.0)]
    # a call with the wrong operand (288, not 289) is a wrong step, even though the calculator's result is right
    assert task.step_rewards(EXAMPLE, "<<512+347=859>>;<<859-288=571>>;A:571") == [(15, 1.0), (31, 0.0), (36, 0.0)]
    # a call the calculator refused: a wrong step
    assert task.step_rewards(EXAMPLE, "<<512+347=error: cannot parse the expression>>;A:570")[0][1] == 0.0
    # an unclosed call before the answer is a wrong step, not a crash
    assert task.step_rewards(EXAMPLE, "<<512+347=859;A:570") == [(13, 0.0), (18, 1.0)]


def test_verify_reads_the_answer_after_calls(task):
    assert task.verify(EXAMPLE, "<<512+347=859>>;<<859-289=570>>;A:570")
    assert not task.verify(EXAMPLE, "<<512+347=859>>;<<859-289=570>>;A:571")
    assert not task.verify(EXAMPLE, "<<512+347=859>>;<<859-289=570>>")  # no A:


def test_call_format_and_alphabet(task):
    assert task.call_format.parse("<<512+347=").name == "calculator"
    tokenizer = build_char_tokenizer(task.alphabet)
    rng = random.Random(0)
    texts = [task.flawed_solution(p, rng) for p in task.train_problems()[:50]]
    texts += [Calculator()(e)[0] for e in ("1/0", "x", "2**0.5", "1e5", "9**9**9", "", "{", "9" * 300, "7/3", "-1/8")]
    for text in texts:  # solutions, results and the calculator's error texts: no unknown character
        assert tokenizer.unk_token_id not in tokenizer(text, add_special_tokens=False).input_ids, text


def test_default_tasks_keep_their_alphabet():
    # the tools task's extra characters stay its own: the default model's vocabulary (and its references) is unchanged
    assert ArithmeticTask.alphabet == "0123456789+-*=;:QA"
    assert ArithmeticLinesTask.alphabet == "0123456789+-*=;:QA#\n "
    assert ArithmeticTask.call_format is None and ArithmeticLinesTask.call_format is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(tool_share=1.5), "tool_share"),
        (dict(min_operand=0), "min_operand"),
        (dict(min_operand=500, max_operand=400), "min_operand"),
        (dict(max_value=1000), "max_value"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ArithmeticToolsTask(**kwargs)


def test_tool_share_needs_tools(tmp_path):
    from omegaconf import OmegaConf, open_dict

    from grpo.checks import ConfigError, check_config
    from grpo_testkit import compose_config

    cfg = compose_config(["task=arithmetic_tools"], output_dir=tmp_path)  # tool_share=0.5, no tools
    with pytest.raises(ConfigError, match=r"task.tool_share=0.5: .* use tools=calculator, or task.tool_share=0"):
        check_config(cfg)
    check_config(compose_config(["task=arithmetic_tools", "task.tool_share=0"], output_dir=tmp_path))  # the baseline
    with open_dict(cfg):
        cfg.tools = OmegaConf.create({"_target_": "grpo.tools.toolbox.Toolbox"})  # what tools=calculator gives
    check_config(cfg)


def test_the_demo_and_its_baseline_differ_only_in_tools(tmp_path):
    from omegaconf import OmegaConf

    from grpo.checks import check_config
    from grpo_testkit import compose_config

    demo = compose_config(["experiment=tools_demo"], output_dir=tmp_path)
    baseline = compose_config(["experiment=tools_demo_baseline"], output_dir=tmp_path)
    for cfg in (demo, baseline):
        check_config(cfg)
    assert demo.task.tool_share == 0.5 and demo.tools.format._target_ == "grpo.tools.inline.InlineFormat"
    assert baseline.task.tool_share == 0.0 and not baseline.tools
    plain = lambda cfg: OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k not in ("hydra", "tools")]))  # noqa: E731
    demo_plain, baseline_plain = plain(demo), plain(baseline)
    demo_plain["task"].pop("tool_share"), baseline_plain["task"].pop("tool_share")
    assert demo_plain == baseline_plain  # the same problems, model, warm start and GRPO settings
