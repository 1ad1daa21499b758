"""Real-shaped parts to try the "your own model and data" path offline, in seconds:

    python scripts/make_demo_parts.py --out outputs/demo --num-ops 1 --max-operand 50 --train-size 3000 --test-size 150

writes
- `<out>/model/`: a small Qwen2-shaped causal LM (random weights, built from a transformers config) and a
  byte-level BPE tokenizer trained here with `tokenizers`, with a Qwen-style chat template set by hand
  (<|im_start|>role ... <|im_end|>; EOS <|im_end|>), saved with save_pretrained like any hub model;
- `<out>/data/train.parquet`, `<out>/data/test.parquet`: MATH-style rows {question, answer, solution}
  of multi-step arithmetic, the answer a `\\boxed{}` expression, the solution a worked solution in which
  a needed carry or borrow is dropped with probability `--flaw-prob` (so that a model warm-started on it
  is right some of the time: the starting point GRPO needs).

Then train on them: the command and what it measured are in README, "Your own model and data".
"""

from __future__ import annotations

import argparse


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--train-size", type=int, default=4000)
    parser.add_argument("--test-size", type=int, default=200)
    parser.add_argument("--num-ops", type=int, default=2, help="operations per question: 1 to this")
    parser.add_argument("--max-operand", type=int, default=20)
    parser.add_argument("--flaw-prob", type=float, default=0.6)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = vars(parser.parse_args(argv))
    from grpo.models.demo_parts import write_demo_parts

    write_demo_parts(args.pop("out"), **args)


if __name__ == "__main__":
    main()
