"""Rewards: the `reward` config group. A reward is one component, or a weighted sum of named components
(combine.py), each mapping (problems, completions) to one float or None per completion (base.py)."""
