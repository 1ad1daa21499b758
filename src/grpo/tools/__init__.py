"""Tool use in rollouts: see grpo.tools.base for the contract."""
