"""Speed, side by side: this project's rollout and GRPO step against transformers `generate` and TRL.

    .venv/bin/pip install -e '.[bench]'     # TRL and datasets, against the torch already installed
    .venv/bin/python scripts/bench.py       # CPU: built-in tiny model, G=8, 16 prompts/step, 64 new tokens
    .venv/bin/python scripts/bench.py --profile --json out.json   # + top operators of one step per side, raw data
    .venv/bin/python scripts/bench.py --model qwen2-0.5b --rounds 1   # GPU: 0.5B Qwen2-shaped model (--precision bf16)

One table, every ratio measured in the same run:
(a) rollout tokens/s: `grpo.rollout.sampler.sample` against `model.generate(do_sample=True)` on the
    same prompts (each repeated G times), in alternating repetitions; tokens = completion tokens up
    to and including EOS.
(b) GRPO step time of this project as users run it: GRPOModule + RolloutDataModule under a
    Lightning Trainer, one epoch per step (generation, scoring, reference log-probs, update), logger,
    checkpoints and progress bar off. Split into rollout and update, with the update's model FLOPs
    utilisation (see `update_flops`; on GPU against the device's dense peak).
(c) peak memory during training: on CUDA `max_memory_allocated`; on CPU the peak resident set
    (sampled every 10 ms) above the one at the start of training.
(d) the same step with TRL's GRPOTrainer at an equal setting: same initial weights (the saved
    directory, from which TRL also builds its reference) and tokenizer, G, prompts per step, max
    completion length, temperature 1, top_p 1, top_k off, learning rate (constant), AdamW betas
    (0.9, 0.99), gradient clipping 1.0, beta=0.04 (k3 KL), loss_type="grpo" (= grpo.aggregation=sequence),
    group-std advantage scaling, one update per rollout, fp32. Gradient checkpointing (TRL's default)
    is turned off: it trades speed for memory and this project does not do it. Groups with equal
    rewards stay in the loss on both sides (grpo.skip_zero_spread=false), as TRL keeps them.

(b) and (d) run in two child processes (so each one's memory is its own) that take GRPO steps in
turn, one step each at a time, so both see the same machine load: on a shared 2-core machine other
jobs swing step times tenfold, and whole runs one after the other compare different loads. Both
sides get the same questions in the same order. Step times are medians over the steps after
`--warmup` (at least 1: this project's first rollout runs before the first step is timed), over
`--rounds` pairs of runs with different seeds. Equal learning: the mean rollout reward over the last
half of the steps, per side, with its standard error across those steps.

Model: `tiny` is the default config's model, Llama-shaped (~1M parameters, char tokenizer) with its
supervised warm start (2000 steps), cached where `python train.py` caches it (outputs/cache): the
first run of either builds it (minutes on an idle 2-core machine, an hour on a busy one).
`--warmstart-steps 200` gives a weaker start whose completions are longer and vary more (some run
to the 64-token limit), which is where padding and finished rows cost most. An untrained model
never emits EOS, every completion would run to the limit, which is not what a rollout looks like.
`qwen2-0.5b` is Qwen2.5-0.5B's shape (24 layers, hidden 896, 14 heads / 2 KV heads, 151,936-entry
vocabulary) built from config with random weights and the char tokenizer, for GPUs: its completions
run to the maximum length, which is fine for throughput.

Reward: `--reward steps` (default) is the share of a completion's steps that the task's step
checker marks right, `--reward answer` the final-answer verifier (1/0). Weak warm starts get few
answers right (about half after the default 2000 steps, 1% after 200), so the answer reward is flat in
many groups; the step share varies within groups, so equal learning per step is a real check. Speed does not depend
on the choice.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "outputs" / "bench-cache"
DENSE_PEAK_TFLOPS = {  # per GPU, dense (no sparsity): (fp32 without TF32, bf16)
    "H100": (67.0, 989.0),
    "H200": (67.0, 989.0),
    "A100": (19.5, 312.0),
}


# ---------------------------------------------------------------- shared setup
def compose(args, output_dir: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    overrides = [
        f"grpo.group_size={args.group_size}",
        f"grpo.prompts_per_step={args.prompts}",
        f"grpo.steps={args.steps}",
        f"grpo.beta={args.beta}",
        "grpo.aggregation=sequence",
        "grpo.mu=1",
        "grpo.minibatch_prompts=null",
        "grpo.skip_zero_spread=false",
        "kl=k3",
        f"sampling.max_new_tokens={args.max_new_tokens}",
        f"sampling.temperature={args.temperature}",
        "sampling.top_p=1.0",
        f"optimizer.lr={args.lr}",
        "lr_scheduler=constant",
        *([f"warmstart.steps={args.warmstart_steps}"] if args.warmstart_steps is not None else []),
        f"seed={args.seed}",
        f"output_dir={output_dir}",
        f"trainer.precision={'bf16-mixed' if args.precision == 'bf16' else '32-true'}",
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def load_setup(args, output_dir: str):
    """(cfg, task, policy, tokenizer, path of the saved initial weights), the same for both sides."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from grpo.models.sources import load_pretrained

    cfg = compose(args, output_dir)
    task = instantiate(cfg.task)
    if args.model == "tiny":
        source = instantiate(cfg.model)
        key = OmegaConf.to_yaml(cfg.task)
        policy, tokenizer = source.load(task, task_key=key)
        path = source.cache_path(key)
    else:
        path = build_qwen2_05b(task)
        policy, tokenizer = load_pretrained(str(path))
    return cfg, task, policy, tokenizer, path


QWEN2_05B = dict(  # Qwen2.5-0.5B's shape
    vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
    num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1e6,
)


def build_qwen2_05b(task, dims: dict = QWEN2_05B) -> Path:
    """A Qwen2 model of shape `dims` with random weights (seeded), saved once under outputs/bench-cache."""
    from filelock import FileLock
    from transformers import Qwen2Config

    from grpo.models.sources import PRINTABLE
    from grpo.models.tiny import build_tiny_model
    from grpo.models.tokenizer import build_char_tokenizer

    path = CACHE / ("qwen2-" + "-".join(str(dims[k]) for k in ("hidden_size", "num_hidden_layers", "vocab_size")))
    CACHE.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not (path / "config.json").exists():
            tokenizer = build_char_tokenizer(task.alphabet or PRINTABLE)
            config = Qwen2Config(
                **dims, tie_word_embeddings=True, use_sliding_window=False, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            )
            model = build_tiny_model(config, seed=0)
            tmp = path.with_name(path.name + ".tmp")
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            os.replace(tmp, path)
    return path


class StepShareReward:
    """Outcome reward = share of the completion's steps the task's step checker marks right (0 if none)."""

    def __init__(self, task):
        self.task = task

    def score(self, problem, completion: str) -> float:
        steps = self.task.step_rewards(problem, completion)
        return sum(r for _, r in steps) / len(steps) if steps else 0.0

    def outcome(self, problems, completions):
        return torch.tensor([self.score(p, c) for p, c in zip(problems, completions)])


def answer_score(task, problem, completion: str) -> float:
    return float(task.verify(problem, completion))


def update_flops(model, tokens: int, predicted: int) -> float:
    """Model FLOPs of one update (forward + backward = 3 x forward): 2 x the decoder's parameters per token it
    processes (each group's prompt once, every completion token) plus 2 x hidden x vocab per predicted token
    (the logits). Attention scores are left out (a few % at these lengths)."""
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    body = sum(p.numel() for p in model.parameters()) - embed.numel() - (0 if head is embed else head.numel())
    return 3 * (2 * body * tokens + 2 * head.numel() * predicted)


def device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class MemoryWatch:
    """Peak memory from `start()` on: CUDA max_memory_allocated, or the CPU resident set sampled every 10 ms."""

    def start(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return
        import psutil

        proc = psutil.Process()
        self.base = self.peak = proc.memory_info().rss
        self._stop = threading.Event()

        def watch():
            while not self._stop.wait(0.01):
                self.peak = max(self.peak, proc.memory_info().rss)

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()

    def stop(self) -> dict:
        if torch.cuda.is_available():
            peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            peak = self.peak
        return {"peak_mb": peak / 2**20, "added_mb": (peak - self.base) / 2**20}


class StepProfile:
    """torch.profiler over one chosen step (`--profile`): its top operators by self time, as a table."""

    def __init__(self, enabled: bool, step: int):
        self.enabled, self.step, self.table, self._prof = enabled, step, None, None

    def maybe_start(self, step: int) -> None:
        if self.enabled and step == self.step:
            from torch.profiler import ProfilerActivity, profile

            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            self._prof = profile(activities=activities)
            self._prof.__enter__()

    def maybe_stop(self) -> None:
        if self._prof is not None:
            sync()
            self._prof.__exit__(None, None, None)
            key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
            self.table = self._prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=60)
            self._prof = None


class Clock:
    """Step boundaries: `mark(kind)` records (kind, time) after a device sync."""

    def __init__(self):
        self.marks = []

    def mark(self, kind: str) -> None:
        sync()
        self.marks.append((kind, time.perf_counter()))

    def intervals(self, start: str, end: str) -> list[float]:
        """Time from each `start` mark to the next `end` mark."""
        out, t0 = [], None
        for kind, t in self.marks:
            if kind == start:
                t0 = t
            elif kind == end and t0 is not None:
                out.append(t - t0)
                t0 = None
        return out

    def steps(self) -> list[float]:
        return self.intervals("begin", "end")


class Turns:
    """Lock-step with the other side's worker: after each step, tell the parent and wait for the next turn.

    The parent lets the two workers run one GRPO step at a time, in turn, so both see the same machine
    load (a shared 2-core machine's load swings step times 10x); waiting is outside the timed steps.
    """

    def __init__(self, spec: str | None):
        self.go, self.done = (int(fd) for fd in spec.split(",")) if spec else (None, None)

    def finished(self, last: bool = False, clock: Clock | None = None) -> None:
        """After a step: wait for the next turn (after the last one: for the other side to finish too)."""
        if self.done is not None:
            os.write(self.done, b"d")
            os.read(self.go, 1)
        if clock is not None and not last:
            clock.mark("begin")

    def ready(self, clock: Clock) -> None:
        if self.done is not None:
            os.write(self.done, b"r")
            os.read(self.go, 1)
        clock.mark("begin")


# ---------------------------------------------------------------- workers (child processes)
def worker_ours(args) -> dict:
    import lightning as L
    from hydra.utils import instantiate

    from grpo.checks import check_config

    out_dir = tempfile.mkdtemp(prefix="bench-ours-")
    cfg, task, policy, tokenizer, _ = load_setup(args, out_dir)
    check_config(cfg)
    L.seed_everything(args.seed, workers=True)
    reward = StepShareReward(task) if args.reward == "steps" else instantiate(cfg.reward).bind(task)
    module = instantiate(
        cfg.module, policy=policy, tokenizer=tokenizer, reward=reward, task=task,
        optimizer=instantiate(cfg.optimizer), lr_scheduler=instantiate(cfg.lr_scheduler), log_samples=0,
    )
    datamodule = instantiate(cfg.data, task=task)
    clock, memory, record = Clock(), MemoryWatch(), {"rewards": [], "gen_s": [], "gen_tokens": [], "update_flops": []}
    profiler = StepProfile(args.profile, step=args.warmup)

    turns = Turns(args.turns)

    class Probe(L.Callback):
        def on_train_start(self, trainer, pl_module):
            memory.start()
            turns.ready(clock)
            profiler.maybe_start(trainer.current_epoch)

        def on_train_epoch_start(self, trainer, pl_module):
            clock.mark("rollout_end")
            stats = trainer.datamodule.last_stats
            rollout = trainer.train_dataloader.dataset.rollout
            T = rollout.completion_mask.shape[1]
            prompt_tokens = rollout.attention_mask[:: args.group_size, :-T].sum()  # each group's prompt once
            completion_tokens = rollout.attention_mask[:, -T:].sum()
            record["rewards"].append(stats["reward_mean"])
            record["gen_s"].append(stats["gen_time_s"])
            record["gen_tokens"].append(int(completion_tokens))
            record["update_flops"].append(update_flops(pl_module.policy, int(prompt_tokens + completion_tokens), int(completion_tokens)))

        def on_train_epoch_end(self, trainer, pl_module):
            clock.mark("end")
            profiler.maybe_stop()
            turns.finished(last=trainer.current_epoch + 1 >= args.steps, clock=clock)
            profiler.maybe_start(trainer.current_epoch + 1)

    trainer = instantiate(
        cfg.trainer, logger=False, callbacks=[Probe()], enable_checkpointing=False, enable_progress_bar=False,
        limit_val_batches=0, max_epochs=args.steps,
    )
    trainer.fit(module, datamodule=datamodule)
    mem = memory.stop()
    updates = clock.intervals("rollout_end", "end")
    return dict(steps=clock.steps(), updates=updates, memory=mem, profile=profiler.table, **record)


def worker_trl(args) -> dict:
    from datasets import Dataset
    from hydra.utils import instantiate
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from grpo.tasks.base import Problem

    out_dir = tempfile.mkdtemp(prefix="bench-trl-")
    cfg, task, policy, tokenizer, path = load_setup(args, out_dir)
    datamodule = instantiate(cfg.data, task=task)  # the questions this project's run asks, step by step, in order
    datamodule.setup()
    pool = [q for step in range(args.steps) for q in datamodule.questions(step)]
    dataset = Dataset.from_dict({"prompt": [p.prompt for p in pool], "answer": [p.answer for p in pool], "solution": [p.solution for p in pool]})
    steps_reward = StepShareReward(task)
    record = {"rewards": [], "gen_s": [], "gen_tokens": []}

    def reward_fn(prompts, completions, answer, solution, **kwargs):
        problems = [Problem(p, a, s) for p, a, s in zip(prompts, answer, solution)]
        if args.reward == "steps":
            scores = [steps_reward.score(p, c) for p, c in zip(problems, completions)]
        else:
            scores = [answer_score(task, p, c) for p, c in zip(problems, completions)]
        record["rewards"].append(sum(scores) / len(scores))
        return scores

    generate = policy.generate

    def timed_generate(*a, **kw):  # TRL's generation time, for the breakdown
        sync()
        t0 = time.perf_counter()
        out = generate(*a, **kw)
        sync()
        record["gen_s"].append(time.perf_counter() - t0)
        completion = out[:, kw["input_ids"].shape[1] :]
        is_eos = completion == tokenizer.eos_token_id
        lengths = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, completion.shape[1])
        record["gen_tokens"].append(int(lengths.sum()))
        return out

    policy.generate = timed_generate
    clock, memory, profiler = Clock(), MemoryWatch(), StepProfile(args.profile, step=args.warmup)

    turns = Turns(args.turns)

    class Probe(TrainerCallback):
        def on_train_begin(self, *a, **kw):
            memory.start()
            turns.ready(clock)
            profiler.maybe_start(0)

        def on_step_end(self, args_, state, *a, **kw):
            clock.mark("end")
            profiler.maybe_stop()
            turns.finished(last=state.global_step >= args.steps, clock=clock)
            profiler.maybe_start(state.global_step)

    on_gpu = torch.cuda.is_available()
    config = GRPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=args.prompts * args.group_size,  # completions per step: one optimizer step per rollout
        gradient_accumulation_steps=1,
        num_generations=args.group_size,
        max_completion_length=args.max_new_tokens,
        temperature=args.temperature,
        top_p=1.0,
        top_k=0,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        adam_beta1=0.9,
        adam_beta2=0.99,
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=args.beta,
        loss_type="grpo",
        epsilon=0.2,
        scale_rewards="group",
        num_iterations=1,
        mask_truncated_completions=False,
        bf16=args.precision == "bf16",
        fp16=False,
        use_cpu=not on_gpu,
        gradient_checkpointing=False,
        max_steps=args.steps,
        logging_steps=10**9,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        log_completions=False,
        seed=args.seed,
        shuffle_dataset=False,  # the dataset is already in this project's question order
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=policy, reward_funcs=reward_fn, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[Probe()]
    )
    trainer.train()
    mem = memory.stop()
    return dict(steps=clock.steps(), memory=mem, profile=profiler.table, **record)


# ---------------------------------------------------------------- (a) rollout throughput, in process
def rollout_throughput(args) -> dict:
    from grpo.rollout.sampler import sample

    out_dir = tempfile.mkdtemp(prefix="bench-gen-")
    cfg, task, policy, tokenizer, _ = load_setup(args, out_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    policy.to(device).eval()
    G, eos, pad = args.group_size, tokenizer.eos_token_id, tokenizer.pad_token_id
    pool = task.train_problems()
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def batch(r: int):
        problems = pool[r * args.prompts : (r + 1) * args.prompts]
        enc = tokenizer([p.prompt for p in problems], padding=True, return_tensors="pt", add_special_tokens=False)
        return enc.input_ids.to(device), enc.attention_mask.to(device)

    def ours(r: int) -> int:
        ids, mask = batch(r)
        with autocast:
            out = sample(
                policy, ids, mask, max_new_tokens=args.max_new_tokens, eos_token_id=eos, pad_token_id=pad,
                temperature=args.temperature, generator=torch.Generator(device=device).manual_seed(r), num_samples=G,
            )
        return int(out.mask.sum())

    def plain_generate(r: int) -> int:
        ids, mask = batch(r)
        torch.manual_seed(r)
        with torch.no_grad(), autocast:
            out = policy.generate(
                input_ids=ids.repeat_interleave(G, 0), attention_mask=mask.repeat_interleave(G, 0), do_sample=True,
                temperature=args.temperature, top_p=1.0, top_k=0, max_new_tokens=args.max_new_tokens,
                eos_token_id=eos, pad_token_id=pad,
            )
        completion = out[:, ids.shape[1] :]
        is_eos = completion == eos
        return int(torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, completion.shape[1]).sum())

    rates = {"ours": [], "generate": []}
    for r in range(args.gen_rounds + 1):  # round 0 warms up
        for name, fn in (("ours", ours), ("generate", plain_generate)) if r % 2 == 0 else (("generate", plain_generate), ("ours", ours)):
            sync()
            t0 = time.perf_counter()
            tokens = fn(r)
            sync()
            if r > 0:
                rates[name].append(tokens / (time.perf_counter() - t0))
    return rates


# ---------------------------------------------------------------- orchestration
def run_pair(sides: list[str], args, seed: int) -> dict[str, dict]:
    """One worker process per side, taking GRPO steps in turn (see Turns); their results by side."""
    workers = {}
    for side in sides:
        go_r, go_w = os.pipe()
        done_r, done_w = os.pipe()
        result = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
        log = tempfile.NamedTemporaryFile(suffix=".log", delete=False)
        cmd = [sys.executable, __file__, "--worker", side, "--seed", str(seed), "--result", result, "--turns", f"{go_r},{done_w}"]
        proc = subprocess.Popen(cmd + args.passthrough, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, pass_fds=(go_r, done_w))
        os.close(go_r)
        os.close(done_w)
        workers[side] = dict(proc=proc, go=go_w, done=done_r, result=result, log=log.name)

    def wait(side: str) -> None:
        if not os.read(workers[side]["done"], 1):  # end of file: the worker is gone
            workers[side]["proc"].wait()
            raise RuntimeError(f"{side} worker failed:\n{Path(workers[side]['log']).read_text()[-8000:]}")

    for side in sides:
        wait(side)  # set up and ready to start
    for step in range(args.steps):
        for side in sides if step % 2 == 0 else sides[::-1]:  # who goes first alternates
            os.write(workers[side]["go"], b"g")
            wait(side)
    for side in sides:  # all done: let them finish (none tears down while the other is timed)
        os.write(workers[side]["go"], b"g")
    results = {}
    for side, w in workers.items():
        if w["proc"].wait() != 0:
            raise RuntimeError(f"{side} worker failed:\n{Path(w['log']).read_text()[-8000:]}")
        results[side] = json.loads(Path(w["result"]).read_text())
    return results


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def late_reward(runs: list[dict]) -> tuple[float, float]:
    """Mean reward over the last half of each run's steps, and its standard error across those steps."""
    late = [r for run in runs for r in run["rewards"][len(run["rewards"]) // 2 :]]
    sd = statistics.stdev(late) if len(late) > 1 else 0.0
    return statistics.fmean(late), sd / len(late) ** 0.5


def peak_tflops(args) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    name = device_name()
    for key, (fp32, bf16) in DENSE_PEAK_TFLOPS.items():
        if key in name:
            return bf16 if args.precision == "bf16" else fp32
    return None


def report(args, rates, ours, trl) -> str:
    w = args.warmup
    o_steps = [s for run in ours for s in run["steps"][w:]]
    o_upd = [s for run in ours for s in run["updates"][w:]]
    o_gen = [s for run in ours for s in run["gen_s"][w:]]
    o_gen_tok = [n / s for run in ours for n, s in list(zip(run["gen_tokens"], run["gen_s"]))[w:]]
    o_flops = [f / s for run in ours for f, s in list(zip(run["update_flops"], run["updates"]))[w:]]
    peak = peak_tflops(args)
    rows = [("", "this project", "baseline", "ratio")]

    def row(name, a, b, higher_is_better=True, fmt="{:.1f}"):
        ratio = (a / b if higher_is_better else b / a) if a and b and a == a and b == b else float("nan")
        rows.append((name, fmt.format(a), fmt.format(b) if b == b else "-", f"{ratio:.2f}x" if ratio == ratio else "-"))

    row("(a) rollout tokens/s (vs plain generate)", med(rates["ours"]), med(rates["generate"]), fmt="{:.0f}")
    if trl:
        t_steps = [s for run in trl for s in run["steps"][w:]]
        t_gen = [s for run in trl for s in run["gen_s"][w:]]
        row("(b/d) GRPO step, s (vs TRL GRPOTrainer)", med(o_steps), med(t_steps), higher_is_better=False, fmt="{:.2f}")
        row("      GRPO steps/s", 1 / med(o_steps), 1 / med(t_steps), fmt="{:.3f}")
        row("      of which generation, s", med(o_gen), med(t_gen), higher_is_better=False, fmt="{:.2f}")
        row("      the rest (scoring, ref log-probs, update), s", med(o_steps) - med(o_gen), med(t_steps) - med(t_gen), higher_is_better=False, fmt="{:.2f}")
        o_mem, t_mem = med([r["memory"]["added_mb"] for r in ours]), med([r["memory"]["added_mb"] for r in trl])
        row("(c) peak memory added by training, MB", o_mem, t_mem, higher_is_better=False, fmt="{:.0f}")
        row("    peak memory of the process, MB", med([r["memory"]["peak_mb"] for r in ours]), med([r["memory"]["peak_mb"] for r in trl]), higher_is_better=False, fmt="{:.0f}")
        (o_r, o_se), (t_r, t_se) = late_reward(ours), late_reward(trl)
        rows.append((f"mean reward, steps {args.steps // 2 + 1}-{args.steps} ({args.reward})", f"{o_r:.3f} ± {o_se:.3f}", f"{t_r:.3f} ± {t_se:.3f}", f"diff {o_r - t_r:+.3f}"))
    else:
        row("(b) GRPO step, s", med(o_steps), float("nan"), fmt="{:.2f}")
        row("    of which generation, s", med(o_gen), float("nan"), fmt="{:.2f}")
        row("(c) peak memory added by training, MB", med([r["memory"]["added_mb"] for r in ours]), float("nan"), fmt="{:.0f}")
    rows.append(("update: time / model TFLOP/s", f"{med(o_upd):.2f} s / {med(o_flops) / 1e12:.3f}", "-", f"MFU {med(o_flops) / 1e12 / peak:.1%}" if peak else "-"))
    rows.append(("rollout inside the step: tokens/s", f"{med(o_gen_tok):.0f}", "-", "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(wd) if i == 0 else c.rjust(wd) for i, (c, wd) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    for name, runs in (("this project", ours), ("TRL", trl)):
        if runs:
            curve = [statistics.fmean(step) for step in zip(*(run["rewards"] for run in runs))]
            lines.append(f"mean reward by step, {name}: " + " ".join(f"{r:.3f}" for r in curve))
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["tiny", "qwen2-0.5b"], default="tiny")
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--prompts", type=int, default=16, help="prompts (groups) per GRPO step")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--beta", type=float, default=0.04)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--reward", choices=["steps", "answer"], default="steps")
    p.add_argument("--warmstart-steps", type=int, default=None, help="supervised warm start of the tiny model (default: the config's, 2000)")
    p.add_argument("--steps", type=int, default=8, help="GRPO steps per run and side")
    p.add_argument("--warmup", type=int, default=2, help="first steps of each run left out of the timings")
    p.add_argument("--rounds", type=int, default=2, help="runs per side (each with its own seed)")
    p.add_argument("--gen-rounds", type=int, default=12, help="timed repetitions of (a) per side")
    p.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    p.add_argument("--skip-trl", action="store_true")
    p.add_argument("--profile", action="store_true", help="also print each side's top operators over one step (the first timed one)")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense peak of the device, for MFU")
    p.add_argument("--json", default=None, help="also write the raw measurements here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", choices=["ours", "trl"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    p.add_argument("--turns", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not 1 <= args.warmup < args.steps:
        p.error(f"need 1 <= --warmup < --steps, got --warmup {args.warmup} --steps {args.steps}")
    keep = [a for a in (argv if argv is not None else sys.argv[1:])]
    args.passthrough = _strip(keep, ("--seed", "--worker", "--result", "--turns", "--json"))
    return args


def _strip(argv, names):
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in names:
            skip = True
            continue
        if any(a.startswith(n + "=") for n in names):
            continue
        out.append(a)
    return out


def main() -> None:
    args = parse_args()
    if not torch.cuda.is_available():
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.worker:
        result = (worker_ours if args.worker == "ours" else worker_trl)(args)
        Path(args.result).write_text(json.dumps(result))
        return
    import logging
    import warnings

    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    load = os.getloadavg()
    t0 = time.time()
    print(f"device: {device_name()}, torch threads {torch.get_num_threads()}, load average {load[0]:.1f} / {load[1]:.1f} (1 / 5 min)", flush=True)
    rates = rollout_throughput(args)
    print(f"(a) done in {time.time() - t0:.0f} s", flush=True)
    ours, trl = [], []
    for r in range(args.rounds):
        t1 = time.time()
        results = run_pair(["ours"] if args.skip_trl else ["ours", "trl"], args, seed=args.seed + r)
        ours.append(results["ours"])
        if "trl" in results:
            trl.append(results["trl"])
        print(f"round {r + 1} of (b)-(d) done in {time.time() - t1:.0f} s", flush=True)
    settings = (
        f"model={args.model}, G={args.group_size}, {args.prompts} prompts/step, {args.max_new_tokens} new tokens, "
        f"lr={args.lr}, beta={args.beta}, {args.precision}, {args.steps} steps x {args.rounds} rounds (first {args.warmup} untimed)"
    )
    load_end = os.getloadavg()
    print(f"\n{settings}\nload average at the end {load_end[0]:.1f} / {load_end[1]:.1f}; total {time.time() - t0:.0f} s\n")
    print(report(args, rates, ours, trl))
    for name, runs in (("this project", ours), ("TRL", trl)):
        if runs and runs[0].get("profile"):
            print(f"\nProfile of one GRPO step, {name} (round 1, step {args.warmup + 1}):\n{runs[0]['profile']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": settings, "rates": rates, "ours": ours, "trl": trl, "load": [load, load_end]}, indent=1))


if __name__ == "__main__":
    main()
