"""Tasks: problem sources with outcome (`verify`) and process (`step_rewards`) checkers."""

from .arithmetic import ArithmeticTask, needs_carry_or_borrow
from .arithmetic_lines import ArithmeticLinesTask
from .arithmetic_tools import ArithmeticToolsTask
from .base import Problem, Task
from .gsm8k import GSM8KTask, normalize_number

__all__ = ["ArithmeticLinesTask", "ArithmeticToolsTask", "ArithmeticTask", "GSM8KTask", "Problem", "Task", "needs_carry_or_borrow", "normalize_number"]
