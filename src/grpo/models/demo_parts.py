"""Real-shaped parts built offline: a byte-level BPE tokenizer with a Qwen-style chat template, a small
Qwen2-shaped causal LM from a transformers config, and MATH-style rows of the arithmetic task with boxed
answers. What `scripts/make_demo_parts.py` writes and the end-to-end tests train on."""

from __future__ import annotations

import random
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def rows(task, problems, rng: random.Random) -> list[dict]:
    """MATH-style rows: the question in words, the answer boxed, a (possibly flawed) worked solution, one step per line."""
    out = []
    for p in problems:
        steps = task.flawed_solution(p, rng).split(";")
        stated = steps[-1].removeprefix("A:")
        body = "\n".join(steps[:-1])
        out.append({
            "question": f"What is {p.prompt.removeprefix('Q:').removesuffix('=')}?",
            "answer": f"\\boxed{{{p.answer}}}",
            "solution": f"{body}\nThe answer is \\boxed{{{stated}}}.",
        })
    return out


def build_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence([  # digits one by one, as Qwen2's tokenizer splits them
        pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>", additional_special_tokens=SPECIAL[1:]
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(tokenizer, hidden_size: int, layers: int, seed: int):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=4 * hidden_size, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)


def write_demo_parts(out, *, train_size: int = 4000, test_size: int = 200, num_ops: int = 2, max_operand: int = 20, flaw_prob: float = 0.6,
                     hidden_size: int = 64, layers: int = 2, vocab_size: int = 400, seed: int = 0) -> Path:
    """`out/model` (tokenizer + model, save_pretrained) and `out/data/{train,test}.parquet`; returns `out`."""
    import datasets

    from grpo.tasks.arithmetic import ArithmeticTask

    out = Path(out)
    task = ArithmeticTask(num_ops_min=1, num_ops_max=num_ops, max_operand=max_operand, train_size=train_size,
                          heldout_size=test_size, seed=seed, flaw_prob=flaw_prob)
    rng = random.Random(seed)
    train, test = rows(task, task.train_problems(), rng), rows(task, task.heldout_problems(), rng)
    (out / "data").mkdir(parents=True, exist_ok=True)
    datasets.disable_progress_bars()
    datasets.Dataset.from_list(train).to_parquet(str(out / "data" / "train.parquet"))
    datasets.Dataset.from_list(test).to_parquet(str(out / "data" / "test.parquet"))

    texts = [r[k] for r in train for k in ("question", "solution")] + ["user", "assistant", "system", "Please reason step by step."]
    tokenizer = build_tokenizer(texts, vocab_size)
    model = build_model(tokenizer, hidden_size, layers, seed)
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    print(f"{out}/model: Qwen2-shaped, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
          f"BPE vocabulary {len(tokenizer)}; {out}/data: {len(train)} train / {len(test)} test rows")
    return out
