"""The `python` tool: runs the policy's code as a notebook cell in the sandbox (grpo.tools.sandbox) and returns what
it printed (and the repr of a final bare expression), or a short error text (the last line of the traceback,
"TimeoutError: ...", "MemoryError: ...", "OutputLimit: ...") with error=True. The limits are set in
conf/tools/python.yaml; see grpo.tools.sandbox for exactly what they stop and what they do not."""

from __future__ import annotations

from grpo.tools.sandbox import Limits, run_python


class Python:
    """Python(timeout_s, cpu_s, memory_mb, file_mb, max_output_chars): one sandboxed process per call."""

    name = "python"

    def __init__(self, timeout_s: float = 5.0, cpu_s: int = 2, memory_mb: int = 512, file_mb: int = 1,
                 max_output_chars: int = 2000):
        self.limits = Limits(timeout_s=timeout_s, cpu_s=cpu_s, memory_mb=memory_mb, file_mb=file_mb,
                             max_output_chars=max_output_chars)

    @property
    def schema(self) -> dict:
        """The OpenAI function description a chat template lists in its system turn (`apply_chat_template(tools=...)`)."""
        return {"type": "function", "function": {
            "name": self.name,
            "description": "Run Python code (a notebook cell) and return what it prints and the value of its last "
                           "expression. Standard library and sympy; no files outside its folder, no network.",
            "parameters": {"type": "object", "properties": {"code": {"type": "string", "description": "the Python code to run"}},
                           "required": ["code"]},
        }}

    def __call__(self, arguments: str) -> tuple[str, bool]:
        if not arguments.strip():
            return "SyntaxError: no code to run", True
        return run_python(arguments, self.limits)
