"""Reward sources: the `reward` config group. Each maps (problems, completions) to rewards."""
