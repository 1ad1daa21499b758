"""Calculator: exact arithmetic on a whitelist of syntax, hostile inputs refused quickly, results printed exactly."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest

from grpo.tools.calculator import Calculator


@pytest.fixture(scope="module")
def calc() -> Calculator:
    return Calculator()  # max_digits=100, max_length=200


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("812-457", "355"),  # 812 - 457 = 355
        ("48/2", "24"),  # whole: printed as an integer
        ("7/3", "7/3"),  # 7/3 does not terminate: lowest-terms fraction
        ("14/6", "7/3"),  # 14/6 = 7/3 in lowest terms
        ("-2/6", "-1/3"),
        ("7/2", "3.5"),  # denominator 2: terminates, written exactly
        ("-1/8", "-0.125"),  # denominator 2**3: three places
        ("1/40", "0.025"),  # 40 = 2**3 * 5: max(3, 1) = 3 places
        ("0.1+0.2", "0.3"),  # exact: 1/10 + 2/10 = 3/10, no float rounding
        ("1/3*3", "1"),  # exact: (1/3) * 3 = 1
        ("3.0/1.5", "2"),  # 3 / (3/2) = 2
        (".5+5.", "5.5"),  # both decimal spellings: 1/2 + 5 = 11/2
        ("(3+4)*6", "42"),  # parentheses: 7 * 6
        ("3+4*6", "27"),  # precedence: 3 + 24
        ("7//2", "3"),  # floor division
        ("-7//2", "-4"),  # floor of -3.5
        ("7%3", "1"),
        ("7.5%2", "1.5"),  # 7.5 - 3*2 = 1.5
        ("2**10", "1024"),
        ("2**-2", "0.25"),  # 1 / 4
        ("(2/3)**2", "4/9"),
        ("-(-5)", "5"),  # unary minus twice
        ("+5", "5"),
        (" 12 * 3 ", "36"),  # spaces are fine
        ("(-1)**(10**50)", "1"),  # +-1, 0 to any power is cheap and allowed
        ('{"expression": "2+3"}', "5"),  # a chat format's JSON arguments
    ],
)
def test_exact_results(calc, expression, expected):
    assert calc(expression) == (expected, False)


def test_evaluate_is_exact_fraction(calc):
    assert calc.evaluate("0.1*3") == Fraction(3, 10)  # float arithmetic would give 0.30000000000000004


@pytest.mark.parametrize(
    "expression, message",
    [
        ("1/0", "division by zero"),
        ("5%0", "division by zero"),
        ("5//0", "division by zero"),
        ("0**-1", "division by zero"),  # 1/0
        ("2+", "cannot parse the expression"),
        ("", "empty expression"),
        ("x+1", "not an arithmetic expression"),
        ("2^3", "not an arithmetic expression"),  # xor is not whitelisted
        ("1,000", "not an arithmetic expression"),  # a tuple
        ("1<2", "not an arithmetic expression"),
        ("True+1", "not an arithmetic expression"),  # bool is an int in Python, not here
        ("1j", "not an arithmetic expression"),
        ("'7'", "not an arithmetic expression"),
        ("1e5", "write numbers as plain digits"),
        ("0x10", "write numbers as plain digits"),
        ("1_000", "write numbers as plain digits"),
        ("2**0.5", "the exponent must be a whole number"),
        ("{}", "arguments must be an expression or a json object with an expression"),
        ("{bad json", "arguments must be an expression or a json object with an expression"),
    ],
)
def test_errors_are_short_texts(calc, expression, message):
    assert calc(expression) == (f"error: {message}", True)


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('touch /tmp/calculator_pwned')",
        "__import__('os')",
        "open('/etc/passwd').read()",
        "(1).__class__",  # attribute access
        "().__class__.__bases__[0].__subclasses__()",
        "(lambda: 1)()",
        "lambda: 1",
        "[1, 2][0]",  # subscript
        "[x for x in range(10)]",
        "exec('1')",
        "eval('1+1')",
        "a := 1",
        "1 if 1 else 2",
    ],
)
def test_hostile_code_is_refused_unevaluated(calc, expression, tmp_path):
    text, error = calc(expression)
    assert error and text.startswith("error: ")
    assert not (tmp_path / "calculator_pwned").exists()


@pytest.mark.parametrize(
    "calculator, expression, message",
    [
        (Calculator(), "9**9**9", "number too big"),  # 9**387420489: refused from the operands' sizes
        (Calculator(), "2**333", "number too big"),  # 101 digits > max_digits=100
        (Calculator(), "10**100", "number too big"),  # 1 followed by 100 zeros: 101 digits
        (Calculator(), "1" * 101, "number too big"),  # a 101-digit literal
        (Calculator(), "2**300*2**300", "number too big"),  # each factor fits (91 digits), the product does not
        (Calculator(), "(2**300)**2", "number too big"),
        (Calculator(), "9" * 10_000, "expression too long"),  # 10,000 characters > max_length=200
        (Calculator(max_length=20_000), "9" * 10_000, "number too big"),  # refused before Python builds the int
        (Calculator(max_length=10**6), "-" * 50_000 + "1", "expression too deep"),
        (Calculator(max_length=10**6), "1" + "+1" * 100_000, "expression too deep"),
    ],
)
def test_huge_inputs_are_refused_fast(calculator, expression, message):
    start = time.perf_counter()
    assert calculator(expression) == (f"error: {message}", True)
    assert time.perf_counter() - start < 5.0  # a computed 9**9**9 would take minutes and gigabytes


def test_limits_allow_what_fits():
    assert Calculator()("2**332") == (str(2**332), False)  # 100 digits
    assert Calculator()("10**99")[0] == "1" + "0" * 99
    assert Calculator(max_digits=3)("999+1") == ("error: number too big", True)  # 1000 has 4 digits
    assert Calculator(max_digits=3)("999") == ("999", False)
    assert Calculator(max_length=5)("1+2+3") == ("6", False)
    assert Calculator(max_length=5)("1+2+34") == ("error: expression too long", True)


def test_schema_names_the_tool(calc):
    schema = calc.schema
    assert schema["type"] == "function" and schema["function"]["name"] == "calculator" == calc.name
    assert schema["function"]["parameters"]["required"] == ["expression"]


def test_bad_limits_are_refused():
    with pytest.raises(ValueError, match="max_digits"):
        Calculator(max_digits=0)
