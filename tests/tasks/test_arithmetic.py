"""ArithmeticTask: verifier, step checker, splits and the flawed SFT data, on fixed strings."""

from __future__ import annotations

import random
import re

import pytest

from grpo.tasks import ArithmeticTask, Problem, needs_carry_or_borrow

# 7*3=21; 21+12=33; 33-5=28
EXAMPLE = Problem("Q:7*3+12-5=", "28", "7*3=21;21+12=33;33-5=28;A:28")
STEP_RE = re.compile(r"(-?\d+)([-+*])(\d+)=(-?\d+)")


@pytest.fixture(scope="module")
def task() -> ArithmeticTask:
    return ArithmeticTask(train_size=3000, heldout_size=1000, seed=1)


def apply(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


# ---- verify / extract_answer ----------------------------------------------------------------
@pytest.mark.parametrize(
    "completion, expected",
    [
        ("7*3=21;21+12=33;33-5=28;A:28", True),  # the reference solution
        ("A:28", True),  # only the final answer matters
        ("7*3=21;21+12=33;33-5=27;A:27", False),  # wrong answer
        ("7*3=21;21+12=33;33-5=28;", False),  # no A:
        ("7*3=21;21+12=33;33-", False),  # truncated
        ("%%garbage QQQ ;;==", False),  # garbage
        ("", False),
        ("A:", False),  # marker without a number
        ("A:28;;xyz 99", True),  # trailing text after the answer
        ("A:280", False),  # a longer number is a different answer
        ("A:27;A:28", True),  # the LAST A: counts
        ("A:28;A:27", False),
        ("A:-28", False),
    ],
)
def test_verify(task: ArithmeticTask, completion: str, expected: bool) -> None:
    assert task.verify(EXAMPLE, completion) is expected


def test_extract_answer(task: ArithmeticTask) -> None:
    assert task.extract_answer("7*3=21;A:28") == "28"
    assert task.extract_answer("A:-7x") == "-7"
    assert task.extract_answer("A:028") == "28"  # leading zeros dropped
    assert task.extract_answer("A:x") is None
    assert task.extract_answer("28") is None
    assert task.extract_answer("A:" + "9" * 5000) == "9" * 5000  # huge numbers do not crash


# ---- step_rewards ---------------------------------------------------------------------------
def test_steps_of_reference_solution(task: ArithmeticTask) -> None:
    # "7*3=21;" -> ';' at 6; "21+12=33;" -> ';' at 15; "33-5=28;" -> ';' at 23; "A:28" -> '8' at 27
    assert task.step_rewards(EXAMPLE, EXAMPLE.solution) == [(6, 1.0), (15, 1.0), (23, 1.0), (27, 1.0)]


def test_only_the_wrong_step_is_marked(task: ArithmeticTask) -> None:
    # step 2 uses 20 instead of its own previous result 21 (and adds 13, not 12); steps 3 and A are right
    assert task.step_rewards(EXAMPLE, "7*3=21;20+13=33;33-5=28;A:28") == [(6, 1.0), (15, 0.0), (23, 1.0), (27, 1.0)]


def test_step_continuing_from_wrong_value_is_right(task: ArithmeticTask) -> None:
    # 21+12=32 is wrong (33); 32-5=27 correctly continues from 32; the answer 27 is wrong (28)
    assert task.step_rewards(EXAMPLE, "7*3=21;21+12=32;32-5=27;A:27") == [(6, 1.0), (15, 0.0), (23, 1.0), (27, 0.0)]


def test_step_not_chained_from_own_result_is_wrong(task: ArithmeticTask) -> None:
    # step 2 wrote 32 but step 3 starts from 33 (the true value): not chained -> wrong
    assert task.step_rewards(EXAMPLE, "7*3=21;21+12=32;33-5=28;A:28") == [(6, 1.0), (15, 0.0), (23, 0.0), (27, 1.0)]


def test_wrong_operator_or_operand(task: ArithmeticTask) -> None:
    # 21-12=9 is true arithmetic but the question says +12; 9-5=4 chains correctly
    assert task.step_rewards(EXAMPLE, "7*3=21;21-12=9;9-5=4;A:4") == [(6, 1.0), (14, 0.0), (20, 1.0), (23, 0.0)]


def test_steps_edge_cases(task: ArithmeticTask) -> None:
    assert task.step_rewards(EXAMPLE, "hello world") == []  # garbage: no step
    assert task.step_rewards(EXAMPLE, "") == []
    # missing final answer: three steps, no answer entry
    assert task.step_rewards(EXAMPLE, "7*3=21;21+12=33;33-5=28;") == [(6, 1.0), (15, 1.0), (23, 1.0)]
    # truncated inside step 2: only step 1 is recognisable
    assert task.step_rewards(EXAMPLE, "7*3=21;21+1") == [(6, 1.0)]
    # an extra step is wrong; "28+1=29;" ends at 31, "A:28" ends at 35
    assert task.step_rewards(EXAMPLE, "7*3=21;21+12=33;33-5=28;28+1=29;A:28") == [
        (6, 1.0), (15, 1.0), (23, 1.0), (31, 0.0), (35, 1.0)
    ]
    # answer marker without a number: wrong, ends at the ':'
    assert task.step_rewards(EXAMPLE, "A:") == [(1, 0.0)]
    # a step closed by the answer marker instead of ';' still counts (ends at index 5)
    assert task.step_rewards(EXAMPLE, "7*3=21A:21") == [(5, 1.0), (9, 0.0)]
    # text after the answer is ignored
    assert task.step_rewards(EXAMPLE, EXAMPLE.solution + ";;junk") == [(6, 1.0), (15, 1.0), (23, 1.0), (27, 1.0)]
    # unparseable step 2 (garbage) is wrong; step 3 is judged against the true value 33
    assert task.step_rewards(EXAMPLE, "7*3=21;??;33-5=28;A:28") == [(6, 1.0), (9, 0.0), (17, 1.0), (21, 1.0)]


def test_never_crashes_on_random_strings(task: ArithmeticTask) -> None:
    rng = random.Random(0)
    chars = task.alphabet + " \nxyz"
    for _ in range(500):
        s = "".join(rng.choice(chars) for _ in range(rng.randint(0, 40)))
        task.verify(EXAMPLE, s)
        for end, r in task.step_rewards(EXAMPLE, s):
            assert 0 <= end < len(s) and r in (0.0, 1.0)
    task.step_rewards(EXAMPLE, "9" * 5000 + "+12=" + "9" * 5000 + ";A:" + "1" * 5000)


def test_needs_carry_or_borrow() -> None:
    assert needs_carry_or_borrow("+", 15, 17)  # 5+7=12 >= 10: carry
    assert not needs_carry_or_borrow("+", 15, 14)  # 5+4=9
    assert needs_carry_or_borrow("-", 32, 8)  # 2 < 8: borrow
    assert not needs_carry_or_borrow("-", 38, 2)  # 8 >= 2
    assert not needs_carry_or_borrow("*", 7, 8)  # multiplication never counts


# ---- splits ---------------------------------------------------------------------------------
def test_splits_sizes_disjoint_deduplicated(task: ArithmeticTask) -> None:
    train, held = task.train_problems(), task.heldout_problems()
    assert len(train) == 3000 and len(held) == 1000
    train_prompts, held_prompts = {p.prompt for p in train}, {p.prompt for p in held}
    assert len(train_prompts) == 3000 and len(held_prompts) == 1000
    assert not train_prompts & held_prompts


def test_splits_deterministic(task: ArithmeticTask) -> None:
    same = ArithmeticTask(train_size=3000, heldout_size=1000, seed=1)
    assert same.train_problems() == task.train_problems()
    assert same.heldout_problems() == task.heldout_problems()
    other = ArithmeticTask(train_size=3000, heldout_size=1000, seed=2)
    assert other.heldout_problems() != task.heldout_problems()
    # the held-out split does not depend on train_size
    assert ArithmeticTask(train_size=10, heldout_size=1000, seed=1).heldout_problems() == task.heldout_problems()


def test_default_sizes() -> None:
    t = ArithmeticTask()
    assert len(t.train_problems()) == 50000 and len(t.heldout_problems()) == 1000


def test_space_too_small_raises() -> None:
    # one operation with operands <= 2: far fewer than 110 distinct prompts
    with pytest.raises(ValueError, match="too small"):
        ArithmeticTask(num_ops_min=1, num_ops_max=1, max_operand=2, train_size=100, heldout_size=10).train_problems()


def test_generated_problems_are_well_formed(task: ArithmeticTask) -> None:
    carry_or_borrow = add_sub = 0
    for p in task.train_problems() + task.heldout_problems():
        assert task.verify(p, p.solution)
        rewards = task.step_rewards(p, p.solution)
        assert rewards and all(r == 1.0 for _, r in rewards)
        assert rewards[-1][0] == len(p.solution) - 1
        ops = re.findall(r"[-+*]", p.prompt)
        assert 2 <= len(ops) <= 3 and len(rewards) == len(ops) + 1
        assert all(set(s) <= set(task.alphabet) for s in (p.prompt, p.solution))
        for j, (a, op, b, c) in enumerate(STEP_RE.findall(p.solution)):
            a, b, c = int(a), int(b), int(c)
            assert apply(op, a, b) == c and 0 <= c <= 199
            if op == "*":
                assert j == 0 and 2 <= a <= 9 and 2 <= b <= 9
            else:
                assert 1 <= b <= 99
                add_sub += 1
                carry_or_borrow += needs_carry_or_borrow(op, a, b)
    assert 0.3 < carry_or_borrow / add_sub < 0.7  # a real mix of carry/borrow steps


# ---- flawed SFT data ------------------------------------------------------------------------
def _solutions(task: ArithmeticTask) -> dict[str, Problem]:
    return {p.prompt: p for p in task.train_problems()}


def test_sft_without_flaws_is_correct(task: ArithmeticTask) -> None:
    clean = ArithmeticTask(train_size=3000, heldout_size=1000, seed=1, flaw_prob=0.0)
    by_prompt = _solutions(clean)
    examples = clean.sft_examples(500, seed=0)
    assert len(examples) == 500 and examples == clean.sft_examples(500, seed=0)
    for prompt, completion in examples:
        assert completion == by_prompt[prompt].solution  # drawn from train, never held out


def test_sft_always_flawed_when_carry_or_borrow_needed() -> None:
    t = ArithmeticTask(train_size=3000, heldout_size=1000, seed=1, flaw_prob=1.0)
    by_prompt = _solutions(t)
    n_flawed = 0
    for prompt, completion in t.sft_examples(1000, seed=3):
        p = by_prompt[prompt]
        needed = any(needs_carry_or_borrow(op, int(a), int(b)) for a, op, b, _ in STEP_RE.findall(p.solution))
        # a dropped carry (-10) and a later dropped borrow (+10) can cancel in the final answer,
        # so "wrong" means a wrong step, not necessarily a wrong answer
        assert (completion != p.solution) == needed
        assert (min(r for _, r in t.step_rewards(p, completion)) == 0.0) == needed
        n_flawed += needed
    assert n_flawed > 300


def test_sft_flaw_rate() -> None:
    t = ArithmeticTask(train_size=3000, heldout_size=1000, seed=1, flaw_prob=0.6)
    needed = dropped = wrong_answers = 0
    by_prompt = _solutions(t)
    for prompt, completion in t.sft_examples(3000, seed=5):
        wrong_answers += not t.verify(by_prompt[prompt], completion)
        for a, op, b, c in STEP_RE.findall(completion):
            a, b, c = int(a), int(b), int(c)
            if needs_carry_or_borrow(op, a, b):
                needed += 1
                dropped += c != apply(op, a, b)
                assert c - apply(op, a, b) in (0, -10 if op == "+" else 10)
            else:
                assert c == apply(op, a, b)  # steps without carry/borrow are always right
    assert needed > 1000
    assert abs(dropped / needed - 0.6) < 0.05
    assert 0.2 < wrong_answers / 3000 < 0.9  # the warm start is right only some of the time
