"""What cached reward-model artefacts are keyed by: a policy's weights and a task's settings."""

from __future__ import annotations

import hashlib


def policy_fingerprint(policy, per_tensor: int = 4096) -> str:
    """A short hash of the policy's weights (a strided sample of each tensor): cheap even for large models."""
    digest = hashlib.sha256()
    for name, tensor in policy.state_dict().items():
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // per_tensor)].float().cpu()
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def task_settings(task) -> dict:
    """The task's plain settings (its public str / number / bool / None attributes)."""
    return {k: v for k, v in vars(task).items() if not k.startswith("_") and isinstance(v, (str, int, float, bool, type(None)))}
