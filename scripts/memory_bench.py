"""Peak memory of one GRPO policy update: full fine-tuning vs LoRA, with and without gradient checkpointing.

    python scripts/memory_bench.py                       # a ~75M-parameter Qwen2-shaped model, 16 x 384 tokens
    python scripts/memory_bench.py --hidden 512 --layers 6 --rows 8 --tokens 256

Each mode runs in its own process (so one's peak does not hide another's): the model is built from a
transformers config (random weights), the reference made as a run makes it (full fine-tuning: a frozen
copy; LoRA: none, the adapters switched off), then one update (reference log-probs, policy log-probs with
gradients, the GRPO loss, backward, AdamW step) on random tokens. Printed: parameters trained, the resident
memory after building (weights + reference), and the peak during the update above that, from the OS's
max-RSS counter (CPU) or torch.cuda.max_memory_allocated (GPU).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

MODES = {
    "full": dict(lora=False, checkpointing=False),
    "full+checkpointing": dict(lora=False, checkpointing=True),
    "lora": dict(lora=True, checkpointing=False),
    "lora+checkpointing": dict(lora=True, checkpointing=True),
}


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def one(mode: str, args) -> dict:
    import copy

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from grpo.algo.loss import GRPOLoss
    from grpo.models.adapters import AdapterFree, LoRA, reference_model
    from grpo.rollout.logprobs import completion_logprobs

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=4 * args.hidden, num_hidden_layers=args.layers,
                         num_attention_heads=args.hidden // 64, num_key_value_heads=max(1, args.hidden // 256), max_position_embeddings=2048,
                         tie_word_embeddings=True)
    model = Qwen2ForCausalLM(config).to(device)
    settings = MODES[mode]
    if settings["lora"]:
        model = LoRA(r=16, alpha=32).apply(model)
        reference = AdapterFree(model)
    else:
        reference = copy.deepcopy(model).requires_grad_(False).eval()
    if settings["checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    P, T = args.tokens // 4, args.tokens - args.tokens // 4
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, args.vocab, (args.rows, P + T), generator=g).to(device)
    attention_mask = torch.ones_like(input_ids)
    mask = torch.ones(args.rows, T, dtype=torch.bool, device=device)
    advantages = torch.randn(args.rows, generator=g).to(device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = rss_mib()
    with torch.no_grad(), reference_model(reference) as ref:
        ref_logp, _ = completion_logprobs(ref, input_ids, attention_mask, T)
    logp, _ = completion_logprobs(model, input_ids, attention_mask, T)
    loss, _ = GRPOLoss(beta=0.04, epsilon=0.2)(logp, logp.detach(), ref_logp, advantages, mask)
    loss.backward()
    optimizer.step()
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else rss_mib()
    return {"mode": mode, "device": device, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "trained_M": sum(p.numel() for p in trainable) / 1e6, "built_MiB": base, "update_peak_MiB": peak - base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=384)
    parser.add_argument("--mode", choices=list(MODES), help=argparse.SUPPRESS)  # one mode, in a child process
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(one(args.mode, args)))
        return
    passed = [a for a in sys.argv[1:]]
    print(f"{'mode':<20} {'params (M)':>10} {'trained (M)':>11} {'built (MiB)':>11} {'update peak (MiB)':>17}")
    for mode in MODES:
        out = subprocess.run([sys.executable, __file__, *passed, "--mode", mode], capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{mode:<20} {r['params_M']:>10.1f} {r['trained_M']:>11.2f} {r['built_MiB']:>11.0f} {r['update_peak_MiB']:>17.0f}   ({r['device']})")


if __name__ == "__main__":
    main()
