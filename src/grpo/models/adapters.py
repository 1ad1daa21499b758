"""LoRA adapters through peft (the `adapter` config group): only the adapters train, and pi_ref is the
same model with its adapters switched off, so no second copy of the weights is kept.

The policy stays the transformers model itself (peft injects `lora.Linear` layers in place; the
PeftModel wrapper is not kept), so log-probs, decoding, strategies and checkpoints see a plain causal LM.

- `LoRA(...).apply(model)`: adapters injected, every other weight frozen.
- `AdapterFree(policy)`: pi_ref; `with ref.active() as model:` is the policy with its adapters off.
- `fold_adapters(policy, seed)`: W <- W + s B A, then B <- 0 (A re-drawn from seed): the policy unchanged, its
  adapter-free self now equal to it (pi_ref <- pi_theta for rm_schedule=iterative).
- `merge_lora_state(state, scaling)`: a full state dict with adapters -> a plain transformers one.
"""

from __future__ import annotations

import contextlib
import re

import torch
from torch import Tensor, nn

ADAPTER = "default"  # peft's name for the one adapter


def lora_layers(model: nn.Module) -> list:
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def has_lora(model: nn.Module) -> bool:
    return bool(lora_layers(model))


class LoRA:
    """r: rank; alpha: scaling numerator (scale alpha / r, or alpha / sqrt(r) with rslora); dropout on the adapter's
    input; target_modules: "all-linear" (every linear layer but the output head) or a list of module names;
    save_adapter: also write the adapter alone (peft format) next to the merged export; seed: the adapters' initial
    draw (the same on every rank and in every run with this seed, whatever else used the random state before)."""

    def __init__(self, r: int = 16, alpha: float = 32, dropout: float = 0.0, target_modules="all-linear",
                 rslora: bool = False, save_adapter: bool = False, seed: int = 0):
        if not isinstance(r, int) or r < 1:
            raise ValueError(f"adapter.r={r!r}: the LoRA rank must be an integer >= 1, e.g. adapter.r=16")
        if not 0 <= dropout < 1:
            raise ValueError(f"adapter.dropout={dropout}: must be in [0, 1)")
        self.r, self.alpha, self.dropout, self.rslora, self.save_adapter, self.seed = r, alpha, dropout, rslora, save_adapter, seed
        self.target_modules = target_modules if isinstance(target_modules, str) else list(target_modules)

    @property
    def scaling(self) -> float:
        return self.alpha / (self.r ** 0.5 if self.rslora else self.r)

    def config(self, base: str | None = None):
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=self.target_modules,
                          use_rslora=self.rslora, task_type="CAUSAL_LM", base_model_name_or_path=base)

    def apply(self, model: nn.Module) -> nn.Module:
        """`model` with LoRA adapters injected in place (its class unchanged); only adapter weights require grad."""
        from peft import get_peft_model

        config = self.config()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                peft_model = get_peft_model(model, config)
        except ValueError as err:
            raise ValueError(f"adapter.target_modules={self.target_modules!r} matches no layer of this model ({err}); "
                             "use all-linear or names of its linear layers, e.g. [q_proj, v_proj]") from err
        return peft_model.get_base_model()


    def save(self, state: dict[str, Tensor], path, base: str | None = None) -> None:
        """The adapter alone, in peft's format (PeftModel.from_pretrained(base_model, path) loads it), from a full state dict."""
        from pathlib import Path

        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        adapter = {}
        for key, value in state.items():
            m = _LORA_KEY.match(key)
            if m:
                adapter[f"base_model.model.{m.group(1)}.lora_{m.group(2)}.weight"] = value.contiguous()
        save_file(adapter, str(path / "adapter_model.safetensors"))
        self.config(base).save_pretrained(str(path))


@contextlib.contextmanager
def adapters_disabled(model: nn.Module):
    """`model` computing without its adapters (pi_ref), restored on exit."""
    layers = [m for m in lora_layers(model) if not m.disable_adapters]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield model
    finally:
        for layer in layers:
            layer.enable_adapters(True)


class AdapterFree:
    """pi_ref of a LoRA policy: the policy itself with its adapters off (no weights of its own)."""

    def __init__(self, policy: nn.Module):
        self.policy = policy

    def active(self):
        return adapters_disabled(self.policy)


def reference_model(reference):
    """Context giving the module that computes pi_ref: a frozen copy as it is, an AdapterFree view switched on."""
    return reference.active() if isinstance(reference, AdapterFree) else contextlib.nullcontext(reference)


@torch.no_grad()
def fold_adapters(model: nn.Module, seed: int) -> None:
    """Fold each adapter into its base weight (W <- W + s B A) and restart it (B <- 0, A re-drawn): the model computes
    the same function, and with its adapters off it now computes that function too. A is drawn (peft's initialiser)
    from `seed` alone, as `LoRA.apply` draws it: the same on every rank, whatever else used the random state."""
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # every device's generator: the draw happens where the weights are
        for layer in lora_layers(model):
            base = layer.get_base_layer()
            base.weight.data += layer.get_delta_weight(ADAPTER).to(base.weight.dtype)
            layer.reset_lora_parameters(ADAPTER, True)


_LORA_KEY = re.compile(r"^(.*)\.lora_(A|B)\.[^.]+\.weight$")


def merge_lora_state(state: dict[str, Tensor], scaling: float) -> dict[str, Tensor]:
    """A full state dict of a LoRA-injected model -> the plain model's: `X.base_layer.weight` + scaling * B @ A
    becomes `X.weight` (`X.base_layer.bias` -> `X.bias`); adapter entries dropped."""
    pairs: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        m = _LORA_KEY.match(key)
        if m:
            pairs.setdefault(m.group(1), {})[m.group(2)] = value
    merged = {}
    for key, value in state.items():
        if _LORA_KEY.match(key):
            continue
        if ".base_layer." in key:
            prefix, _, rest = key.partition(".base_layer.")
            if rest == "weight" and prefix in pairs:
                ab = pairs[prefix]
                value = (value.float() + scaling * ab["B"].float() @ ab["A"].float()).to(value.dtype)
            key = f"{prefix}.{rest}"
        merged[key] = value
    return merged
