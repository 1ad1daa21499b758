"""Peak memory of one GRPO policy update as train.py runs it: full fine-tuning vs LoRA, with and without
gradient checkpointing.

    python scripts/memory_bench.py                       # a ~90M-parameter Qwen2-shaped model, 16 rows x 384 tokens
    python scripts/memory_bench.py --rows 2 --tokens 128

A Qwen2-shaped model with random weights (vocabulary 32,000) is saved once under --work with a character
tokenizer (the rollout's completions are random tokens: memory depends only on their number). Each mode then
runs in its own process (so one's peak does not hide another's) and does what
`python train.py model=hf model.name_or_path=<that model> [adapter=lora] [model.gradient_checkpointing=true]`
does: the config composed from conf/, the module built by grpo.pipeline.build (dropout off, the reference as a
run makes it: a frozen copy, or with LoRA the adapters switched off), then one GRPO step fitted by the trainer:
a rollout (old and reference log-probs in eval mode), then one update in GRPOModule.training_step (train mode:
checkpointing recomputes), its backward and the AdamW step. Printed: parameters trained, the memory after
building, the update's shape (rows x prompt + completion tokens) and the peak during the update (training_step
to the end of the optimizer step) above the memory at its start: torch.cuda.max_memory_allocated on GPU; on CPU
the resident memory sampled every millisecond (the OS's max-RSS counter cannot be reset after the rollout).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = {
    "full": [],
    "full+checkpointing": ["model.gradient_checkpointing=true"],
    "lora": ["adapter=lora", "adapter.r=16", "adapter.alpha=32"],
    "lora+checkpointing": ["adapter=lora", "adapter.r=16", "adapter.alpha=32", "model.gradient_checkpointing=true"],
}


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20  # resident pages (4 KiB)


class UpdatePeak:
    """The peak memory from the update's start (training_step) to its end (the optimizer step), above that start."""

    def __init__(self, cuda: bool):
        self.cuda, self.start, self.peak, self._on = cuda, None, 0.0, False
        if not cuda:
            threading.Thread(target=self._poll, daemon=True).start()

    def _poll(self):
        while True:
            if self._on:
                self.peak = max(self.peak, rss_mib())
            time.sleep(0.001)

    def begin(self):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated() / 2**20
        else:
            self.start = self.peak = rss_mib()
            self._on = True

    def end(self):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() / 2**20
        self._on = False

    @property
    def above_start(self) -> float:
        return self.peak - self.start


def save_model(path: Path, args) -> None:
    """A random Qwen2-shaped causal LM with a character tokenizer (what model=hf loads)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from grpo.models.tokenizer import build_char_tokenizer
    from grpo.tasks import ArithmeticTask

    tokenizer = build_char_tokenizer(ArithmeticTask.alphabet)
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=4 * args.hidden, num_hidden_layers=args.layers,
                         num_attention_heads=args.hidden // 64, num_key_value_heads=max(1, args.hidden // 256), max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)


def one(mode: str, args) -> dict:
    import torch
    from hydra import compose, initialize_config_dir

    from grpo.pipeline import build

    cuda = torch.cuda.is_available()
    group_size = 8 if args.rows % 8 == 0 else args.rows
    work = Path(args.work).resolve()
    overrides = [
        "model=hf", f"model.name_or_path={work / 'model'}", f"model.cache_dir={work / 'cache'}", f"output_dir={work / mode}",
        "grpo.steps=1", f"grpo.group_size={group_size}", f"grpo.prompts_per_step={args.rows // group_size}",
        f"sampling.max_new_tokens={args.tokens - args.prompt_tokens}", "eval.every_n_steps=100", "+trainer.enable_progress_bar=false",
        *MODES[mode],
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    module, datamodule, trainer = build(cfg)
    if cuda:
        module.cuda()
    built = torch.cuda.memory_allocated() / 2**20 if cuda else rss_mib()
    peak = UpdatePeak(cuda)
    step = module.training_step

    def measured_step(batch, batch_idx):  # the module's own update, measured from its start
        peak.begin()
        return step(batch, batch_idx)

    module.training_step = measured_step
    module.on_train_batch_end = lambda outputs, batch, batch_idx: peak.end()  # after backward and the optimizer step
    trainer.fit(module, datamodule=datamodule)
    batch = module.last_rollout.batch
    T = batch.completion_mask.shape[1]
    return {"mode": mode, "device": "cuda" if cuda else "cpu", "params_M": sum(p.numel() for p in module.policy.parameters()) / 1e6,
            "trained_M": sum(p.numel() for p in module.policy.parameters() if p.requires_grad) / 1e6, "built_MiB": built,
            "shape": f"{len(batch)} x {batch.input_ids.shape[1] - T}+{T}", "update_peak_MiB": peak.above_start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--rows", type=int, default=16, help="completions in the update (group size 8 when it divides, else one group)")
    parser.add_argument("--tokens", type=int, default=384, help="prompt + completion tokens per row (about)")
    parser.add_argument("--prompt-tokens", type=int, default=16, help="the task's prompts' length, subtracted for max_new_tokens")
    parser.add_argument("--work", default="/tmp/grpo_memory_bench", help="where the random model, caches and run outputs go")
    parser.add_argument("--mode", choices=list(MODES), help=argparse.SUPPRESS)  # one mode, in a child process
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(one(args.mode, args)))
        return
    model = Path(args.work) / "model"
    if not (model / "config.json").exists():
        save_model(model, args)
    print(f"{'mode':<20} {'params (M)':>10} {'trained (M)':>11} {'built (MiB)':>11} {'update (rows x P+T)':>20} {'update peak (MiB)':>17}")
    for mode in MODES:
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--mode", mode], capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{mode} failed:\n{out.stderr[-4000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{mode:<20} {r['params_M']:>10.1f} {r['trained_M']:>11.2f} {r['built_MiB']:>11.0f} {r['shape']:>20} "
              f"{r['update_peak_MiB']:>17.0f}   ({r['device']})")


if __name__ == "__main__":
    main()
