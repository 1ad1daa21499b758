"""Real-shaped parts built offline: a byte-level BPE tokenizer with a Qwen2.5-style chat template (tool role included), a small
Qwen2-shaped causal LM from a transformers config, and MATH-style rows of the arithmetic task with boxed
answers. What `scripts/make_demo_parts.py` writes and the end-to-end tests train on."""

from __future__ import annotations

import random
from pathlib import Path

# Qwen2.5's chat format: <|im_start|>role\ncontent<|im_end|>\n per message; with `tools`, the system turn lists their
# JSON schemas and says how to call one (<tool_call>{"name": ..., "arguments": {...}}</tool_call>); an assistant
# message's `tool_calls` are rendered that way; a tool message is a user turn holding <tool_response>...</tool_response>
# (consecutive tool messages share one turn). Without tools or tool messages it renders as a plain ChatML template.
CHAT_TEMPLATE = (
    "{%- if tools %}{{ '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}{% endif %}"
    "{{ '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function "
    "signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{ '\\n' + (tool | tojson) }}{% endfor %}"
    "{{ '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call>"
    "</tool_call> XML tags:\\n<tool_call>\\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n</tool_call>"
    "<|im_end|>\\n' }}{% endif %}"
    "{%- for message in messages %}"
    "{%- if tools and loop.first and message['role'] == 'system' %}"
    "{%- elif message['role'] == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}{{ '<|im_start|>user' }}{% endif %}"
    "{{ '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{ '<|im_end|>\\n' }}{% endif %}"
    "{%- elif message['role'] == 'assistant' and message.tool_calls %}"
    "{{ '<|im_start|>assistant' }}{% if message['content'] %}{{ '\\n' + message['content'] }}{% endif %}"
    "{%- for call in message['tool_calls'] %}{% set call = call['function'] if call['function'] is defined else call %}"
    "{{ '\\n<tool_call>\\n{\"name\": \"' + call['name'] + '\", \"arguments\": ' + (call['arguments'] | tojson) + '}\\n</tool_call>' }}"
    "{%- endfor %}{{ '<|im_end|>\\n' }}"
    "{%- else %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endif %}"
    "{%- endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
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
