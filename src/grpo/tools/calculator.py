"""The calculator tool (tools=calculator): arithmetic evaluated exactly, with integers and fractions, never with eval.

The expression is parsed with `ast` and walked over a whitelist: integer and decimal literals (``12``, ``0.25``,
``.5``), parentheses, unary ``+``/``-`` and the binary ``+ - * / // % **``. Values are `fractions.Fraction`, so
``0.1+0.2`` is exactly 3/10 and ``1/3*3`` exactly 1. Names, calls, attributes, strings, comparisons, lambdas, ...
are refused without being evaluated.

A result prints as (``Calculator.format``):
- an integer when it is whole: ``812-457`` -> ``355``, ``6/3`` -> ``2``;
- else a decimal when it terminates (its lowest-terms denominator has no prime factor but 2 and 5), written
  exactly: ``7/2`` -> ``3.5``, ``-1/8`` -> ``-0.125``, ``0.1+0.2`` -> ``0.3`` (GSM8K's annotations write these);
- else a fraction in lowest terms: ``7/3`` -> ``7/3``, ``-2/6`` -> ``-1/3``.

Limits, so that a hostile expression costs microseconds (``9**9**9``, a 10,000-digit literal): the expression is at
most `max_length` characters; every literal and every intermediate value has numerator and denominator of at most
`max_digits` decimal digits (checked before a power is computed, from the operands' sizes, and after every other
operation); an exponent must be a whole number. A failure is a short lowercase error text (``error: division by
zero``) returned with error=True, never an exception.
"""

from __future__ import annotations

import ast
import json
import re
from fractions import Fraction

_LITERAL_RE = re.compile(r"\d+(?:\.\d*)?|\.\d+")  # digits with at most one decimal point: no 1e5, 0x10, 1_000, 1j
_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: Fraction(a // b),
    ast.Mod: lambda a, b: a % b,
}
_UNARY = {ast.UAdd: lambda a: a, ast.USub: lambda a: -a}


class CalculatorError(ValueError):
    """A bad expression; its message is the error text the policy reads (lowercase words only)."""


class Calculator:
    """The `calculator` tool: `calculator("812-457") == ("355", False)`; see the module docstring."""

    name = "calculator"

    def __init__(self, max_digits: int = 100, max_length: int = 200) -> None:
        if max_digits < 1 or max_length < 1:
            raise ValueError(f"Calculator: max_digits and max_length must be >= 1, got {max_digits}, {max_length}")
        self.max_digits, self.max_length = max_digits, max_length
        self._limit = 10**max_digits  # the smallest number of max_digits + 1 digits

    @property
    def schema(self) -> dict:
        """The tool as an OpenAI-style function, for chat templates that list the tools."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": "Evaluate an arithmetic expression exactly: integers, decimals and fractions; "
                "+ - * / // % ** and parentheses. Returns an integer, a terminating decimal or a fraction.",
                "parameters": {
                    "type": "object",
                    "properties": {"expression": {"type": "string", "description": "e.g. 812-457 or (3+4)/6"}},
                    "required": ["expression"],
                },
            },
        }

    def __call__(self, arguments: str) -> tuple[str, bool]:
        """(result text, False) or ("error: ...", True). `arguments`: the expression, or the JSON object
        ``{"expression": "..."}`` a chat format passes on."""
        try:
            return self.format(self.evaluate(_expression(arguments))), False
        except CalculatorError as err:
            return f"error: {err}", True

    def evaluate(self, expression: str) -> Fraction:
        """The exact value of `expression`; CalculatorError when it is not allowed arithmetic or too big."""
        expression = expression.strip()
        if not expression:
            raise CalculatorError("empty expression")
        if len(expression) > self.max_length:
            raise CalculatorError("expression too long")
        if re.search(rf"\d{{{self.max_digits + 1}}}", expression):  # before parsing: Python would build the int
            raise CalculatorError("number too big")
        try:
            return self._value(ast.parse(expression, mode="eval").body, expression)
        except CalculatorError:
            raise
        except (SyntaxError, ValueError):  # ValueError: e.g. a null byte
            raise CalculatorError("cannot parse the expression") from None
        except ZeroDivisionError:
            raise CalculatorError("division by zero") from None
        except (RecursionError, MemoryError):
            raise CalculatorError("expression too deep") from None

    @staticmethod
    def format(value: Fraction) -> str:
        """``355``, ``3.5`` (a terminating decimal, exact) or ``7/3`` (lowest terms); see the module docstring."""
        if value.denominator == 1:
            return str(value.numerator)
        den, twos, fives = value.denominator, 0, 0
        while den % 2 == 0:
            den, twos = den // 2, twos + 1
        while den % 5 == 0:
            den, fives = den // 5, fives + 1
        if den != 1:
            return f"{value.numerator}/{value.denominator}"
        places = max(twos, fives)  # value * 10**places is a whole number
        scaled = abs(value.numerator) * 10**places // value.denominator
        digits = str(scaled).rjust(places + 1, "0")
        return ("-" if value < 0 else "") + digits[:-places] + "." + digits[-places:]

    # ---- the whitelist walk -------------------------------------------------------------
    def _value(self, node: ast.AST, source: str) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):  # not bool, complex or str
            text = ast.get_source_segment(source, node) or ""
            if not _LITERAL_RE.fullmatch(text):
                raise CalculatorError("write numbers as plain digits")
            return self._checked(Fraction(text))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](self._value(node.operand, source))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            return self._power(self._value(node.left, source), self._value(node.right, source))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = self._value(node.left, source), self._value(node.right, source)
            return self._checked(_BINARY[type(node.op)](left, right))
        raise CalculatorError("not an arithmetic expression")

    def _power(self, base: Fraction, exponent: Fraction) -> Fraction:
        if exponent.denominator != 1:
            raise CalculatorError("the exponent must be a whole number")
        e = abs(exponent.numerator)
        if base.denominator == 1 and abs(base.numerator) <= 1:  # 0, 1, -1: any power is 0, 1 or -1
            return base**exponent.numerator
        # |p/q|**e has numerator and denominator of at most e * bits(max(|p|, q)) bits: refused before computing
        if e * max(abs(base.numerator), base.denominator).bit_length() > 2 * self._limit.bit_length():
            raise CalculatorError("number too big")
        return self._checked(base**exponent.numerator)

    def _checked(self, value: Fraction) -> Fraction:
        if max(abs(value.numerator), value.denominator) >= self._limit:
            raise CalculatorError("number too big")
        return value


def _expression(arguments: str) -> str:
    """The expression in `arguments`: the text itself, or the "expression" of a JSON object."""
    if not arguments.lstrip().startswith("{"):
        return arguments
    try:
        parsed = json.loads(arguments)
    except ValueError:
        raise CalculatorError("arguments must be an expression or a json object with an expression") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("expression"), str):
        raise CalculatorError("arguments must be an expression or a json object with an expression")
    return parsed["expression"]
