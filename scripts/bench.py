"""Speed, side by side: this project's rollout and GRPO step against transformers `generate` and TRL.

    .venv/bin/pip install -e '.[bench]'     # TRL and datasets, against the torch already installed
    .venv/bin/python scripts/bench.py       # CPU: built-in tiny model, G=8, 16 prompts/step, 64 new tokens
    .venv/bin/python scripts/bench.py --profile --json out.json   # + top operators of one step per side, raw data
    .venv/bin/python scripts/bench.py --model qwen2-0.5b --rounds 1 --precision bf16   # GPU: Qwen2.5-0.5B's shape
    .venv/bin/python scripts/bench.py --mu 2 --old-logp-from sampler   # 2 updates per rollout, pi_old = the sampler's log-probs

(a) rollout tokens/s: the config's engine (`module.rollout.engine`) against `model.generate(do_sample=True)`, same
prompts x G, alternating; tokens up to and including EOS. (b) GRPO step time as `train.py` runs it (`grpo.pipeline.build`,
`trainer.fit`; logger, checkpoints, progress bar, evaluation off), split by each step's `pl_module.last_rollout` timings
into rollout and update (with its model FLOPs utilisation). (c) peak memory added by training (CUDA allocated, or CPU
resident set). (d) TRL's GRPOTrainer at an equal setting: same weights, tokenizer and questions in order, G, completion
length, temperature 1, no top_p/top_k, constant lr, AdamW betas (0.9, 0.99), clipping 1.0, beta 0.04 (k3), loss_type
"grpo" (= aggregation=sequence), group-std scaling, `--mu` updates per rollout (1; TRL num_iterations), no gradient checkpointing, equal-reward
groups kept. (b) and (d) run in two child processes taking steps in turn (`Turns`), so both see the same load. Step
times: medians after `--warmup` steps over `--rounds` seeds; learning: mean reward over the last half of the steps ± SE.

Models: `tiny`, the config's model and warm start (cached as `train.py` caches it); `qwen2-0.5b`, Qwen2.5-0.5B's shape,
random weights, char tokenizer (GPU). `--reward steps`: the share of a completion's steps the task's checker marks right
(varies within groups even for weak starts); `--reward answer`: the config's verifier.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from grpo.pipeline import load_policy
from grpo.rewards.verifier import VerifierReward

REPO = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
DEVICE = torch.cuda.get_device_name(0) if CUDA else "cpu"
DENSE_PEAK_TFLOPS = {"H100": (67.0, 989.0), "H200": (67.0, 989.0), "A100": (19.5, 312.0)}  # per GPU: fp32 (no TF32), bf16
QWEN2_PATH = REPO / "outputs" / "bench-cache" / "qwen2-896-24-151936"
QWEN2_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,  # its shape
                 num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=True, use_sliding_window=False)
sync = torch.cuda.synchronize if CUDA else (lambda: None)  # before reading a clock


def make_config(args, output_dir: str):
    """The run's config: the bench's setting, with the Trainer's logger, callbacks and evaluation off."""
    overrides = [
        f"grpo.group_size={args.group_size}", f"grpo.prompts_per_step={args.prompts}", f"grpo.steps={args.steps}", f"grpo.beta={args.beta}",
        "grpo.aggregation=sequence", f"grpo.mu={args.mu}", f"grpo.old_logp_from={args.old_logp_from}", "grpo.minibatch_prompts=null", "grpo.skip_zero_spread=false", "kl=k3",
        f"sampling.max_new_tokens={args.max_new_tokens}", "sampling.temperature=1.0", "sampling.top_p=1.0", f"optimizer.lr={args.lr}",
        "lr_scheduler=constant", f"seed={args.seed}", f"output_dir={output_dir}", "~callbacks", "module.log_samples=0",
        f"trainer.precision={'bf16-mixed' if args.precision == 'bf16' else '32-true'}", "++trainer.enable_checkpointing=false",
        "++trainer.enable_progress_bar=false", "++trainer.limit_val_batches=0",
        *([f"warmstart.steps={args.warmstart_steps}"] if args.warmstart_steps is not None else []),
        *(["model=hf", f"model.name_or_path={QWEN2_PATH}"] if args.model == "qwen2-0.5b" else []),
        *([f"reward._target_={__name__}.StepShareReward"] if args.reward == "steps" else []),  # else the config's verifier
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    cfg.logger = None  # no logger (an override cannot set a config group to null)
    if args.model == "qwen2-0.5b":  # built once (by (a), before the workers start), cached like the tiny warm start
        from transformers import Qwen2Config
        from grpo.models import cache, sources, tiny, tokenizer

        def build(out: Path) -> None:
            tok = tokenizer.build_char_tokenizer(instantiate(cfg.task).alphabet or sources.PRINTABLE)
            ids = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
            tiny.build_tiny_model(Qwen2Config(**QWEN2_05B, **ids)).save_pretrained(out)  # random weights, seeded
            tok.save_pretrained(out)
        cache.build_once(QWEN2_PATH, "config.json", build)
    return cfg


def build(args, prefix: str):
    """This project's (module, datamodule, trainer), built as `train.py` builds them."""
    from grpo import pipeline
    return pipeline.build(make_config(args, tempfile.mkdtemp(prefix=prefix)))


class StepShareReward(VerifierReward):
    """Outcome reward = share of the completion's steps the task's step checker marks right (0 if none)."""

    def outcome(self, problems, completions):
        return torch.tensor([sum(r for _, r in s) / len(s) if s else 0.0 for s in self.steps(problems, completions)])


def update_flops(model, tokens: int, predicted: int) -> float:
    """Model FLOPs of one update, 3 x forward: 2 x the decoder's parameters per token it processes (each group's prompt
    once, every completion token) + 2 x hidden x vocab per predicted token (logits); attention scores left out (a few %)."""
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    body = sum(p.numel() for p in model.parameters()) - embed.numel() - (0 if head is embed else head.numel())
    return 3 * (2 * body * tokens + 2 * head.numel() * predicted)


class Turns:
    """A worker's steps: the parent lets the two workers run one GRPO step at a time, in turn, so both see the same
    load (a shared machine swings step times 10x); waiting is not timed. Also the clock (`steps`: seconds from each
    turn's start to its step's end, device synced), peak memory, and `--profile`'s profiler over step `--warmup`."""

    def __init__(self, args):
        self.go, self.done = (int(fd) for fd in args.turns.split(",")) if args.turns else (None, None)
        self.profile_step, self.profile, self._prof, self.steps = args.warmup if args.profile else None, None, None, []

    def ready(self) -> None:
        """Training starts: watch memory from here, wait for the first turn, time step 0."""
        if CUDA:
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            import psutil
            proc, self._stop = psutil.Process(), threading.Event()
            self.base = self.peak = proc.memory_info().rss
            self._watch = threading.Thread(target=self._sample_rss, args=(proc,), daemon=True)
            self._watch.start()
        self._turn(b"r", 0)

    def _sample_rss(self, proc) -> None:  # the CPU resident set every 10 ms, until result()
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, proc.memory_info().rss)

    def step_end(self, step: int, last: bool) -> None:
        """Step `step` is done: record it, wait for the next turn (after the last: for the other side to finish)."""
        sync()
        self.steps.append(time.perf_counter() - self.t0)
        if self._prof is not None:
            self._prof.__exit__(None, None, None)
            key = "self_cuda_time_total" if CUDA else "self_cpu_time_total"
            self.profile, self._prof = self._prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=60), None
        self._turn(b"d", None if last else step + 1)

    def _turn(self, signal: bytes, step: int | None) -> None:
        if self.done is not None:
            os.write(self.done, signal)
            os.read(self.go, 1)
        if step is not None and step == self.profile_step:
            from torch.profiler import ProfilerActivity, profile
            self._prof = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if CUDA else []))
            self._prof.__enter__()
        sync()
        self.t0 = time.perf_counter()

    def result(self, **record) -> dict:
        if not CUDA:
            self._stop.set()
            self._watch.join()
        peak = torch.cuda.max_memory_allocated() if CUDA else self.peak
        return dict(steps=self.steps, memory={"peak_mb": peak / 2**20, "added_mb": (peak - self.base) / 2**20}, profile=self.profile, **record)


def worker_ours(args) -> dict:
    """(b): this project's GRPO steps, in a child process."""
    import lightning as L
    module, datamodule, trainer = build(args, "bench-ours-")
    turns, record = Turns(args), {"rewards": [], "gen_s": [], "rollout_s": [], "logp_s": [], "gen_tokens": [], "update_flops": []}

    class Probe(L.Callback):
        def on_train_start(self, trainer, pl_module):
            turns.ready()

        def on_train_epoch_end(self, trainer, pl_module):
            rollout = pl_module.last_rollout  # this step's: stats, timings, batch
            T = rollout.batch.completion_mask.shape[1]
            prompt_tokens = int(rollout.batch.attention_mask[:: args.group_size, :-T].sum())  # each group's prompt once
            completion_tokens = int(rollout.batch.attention_mask[:, -T:].sum())
            record["rewards"].append(rollout.stats["reward_mean"])
            record["gen_s"].append(rollout.timings["gen_time_s"])
            record["rollout_s"].append(sum(rollout.timings[k] for k in ("gen_time_s", "score_time_s", "logp_time_s")))
            record["logp_s"].append(rollout.timings["logp_time_s"])
            record["gen_tokens"].append(completion_tokens)
            record["update_flops"].append(update_flops(pl_module.policy, prompt_tokens + completion_tokens, completion_tokens))
            turns.step_end(trainer.current_epoch, last=trainer.current_epoch + 1 >= args.steps)

    trainer.callbacks.append(Probe())
    trainer.fit(module, datamodule=datamodule)
    return turns.result(updates=[s - r for s, r in zip(turns.steps, record["rollout_s"])], **record)


def worker_trl(args) -> dict:
    """(d): TRL's GRPOTrainer at the same setting, in a child process."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from grpo.tasks.base import Problem
    cfg = make_config(args, tempfile.mkdtemp(prefix="bench-trl-"))
    task, policy, tokenizer = load_policy(cfg)  # task, model and questions as pipeline.build gets them, without our module
    datamodule = instantiate(cfg.data, task=task)
    datamodule.setup()
    pool = [q for step in range(args.steps) for q in datamodule.questions(step)]  # this project's questions, in order
    dataset = Dataset.from_dict({k: [getattr(p, k) for p in pool] for k in ("prompt", "answer", "solution")})
    reward = instantiate(cfg.reward).bind(task)  # the same reward source as this project's side
    turns, record = Turns(args), {"rewards": [], "gen_s": [], "gen_tokens": []}

    def reward_fn(prompts, completions, answer, solution, **kwargs):
        scores = reward.outcome([Problem(*x) for x in zip(prompts, answer, solution)], completions).tolist()
        record["rewards"].append(sum(scores) / len(scores))
        return scores

    class TimedGRPOTrainer(GRPOTrainer):  # TRL's generation: seconds, tokens up to and including EOS
        def _generate_single_turn(self, *a, **kw):
            sync()
            t0 = time.perf_counter()
            completion_ids, logprobs = super()._generate_single_turn(*a, **kw)
            sync()
            record["gen_s"].append(time.perf_counter() - t0)
            record["gen_tokens"].append(sum(len(c) for c in completion_ids))
            return completion_ids, logprobs

    class Probe(TrainerCallback):
        def on_train_begin(self, *a, **kw):
            turns.ready()

        def on_step_end(self, _, state, *a, **kw):  # one of our steps = one generation + mu optimizer steps
            if state.global_step % args.mu == 0:
                turns.step_end(state.global_step // args.mu - 1, last=state.global_step >= args.steps * args.mu)

    config = GRPOConfig(  # per_device_train_batch_size = completions per step: one optimizer step per rollout
        output_dir=cfg.output_dir, per_device_train_batch_size=args.prompts * args.group_size, gradient_accumulation_steps=1,
        num_generations=args.group_size, max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0, top_k=0,
        learning_rate=args.lr, lr_scheduler_type="constant", adam_beta1=0.9, adam_beta2=0.99, weight_decay=0.0, max_grad_norm=1.0,
        beta=args.beta, loss_type="grpo", epsilon=0.2, scale_rewards="group", num_iterations=args.mu, mask_truncated_completions=False,
        bf16=args.precision == "bf16", fp16=False, use_cpu=not CUDA, gradient_checkpointing=False, max_steps=args.steps * args.mu,
        logging_steps=10**9, save_strategy="no", report_to=[], disable_tqdm=True, log_completions=False, seed=args.seed,
        shuffle_dataset=False, dataloader_num_workers=0,  # the dataset is already in this project's order
    )
    TimedGRPOTrainer(model=policy, reward_funcs=reward_fn, args=config, train_dataset=dataset, processing_class=tokenizer,
                     callbacks=[Probe()]).train()
    return turns.result(**record)


def rollout_throughput(args) -> dict:
    """(a), in process: tokens/s of the config's engine and of plain `generate`, per repetition."""
    from grpo.rollout.engine import encode_prompts, sample_problems
    module, _, _ = build(args, "bench-gen-")
    device, G, tok, engine = "cuda" if CUDA else "cpu", args.group_size, module.tokenizer, module.rollout.engine
    policy, pool = module.policy.to(device).eval(), module.task.train_problems()
    engine.load_weights(policy)

    def generate(name: str, problems, r: int) -> int:  # completion tokens, up to and including EOS
        if name == "ours":
            return int(sample_problems(engine, tok, problems, device=device, num_samples=G, generator=torch.Generator().manual_seed(r))[2].mask.sum())
        ids, mask = encode_prompts(tok, problems, device)
        torch.manual_seed(r)
        out = policy.generate(input_ids=ids.repeat_interleave(G, 0), attention_mask=mask.repeat_interleave(G, 0), do_sample=True, temperature=1.0,
                              top_p=1.0, top_k=0, max_new_tokens=args.max_new_tokens, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        is_eos = out[:, ids.shape[1] :] == tok.eos_token_id
        return int(torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, is_eos.shape[1]).sum())

    rates = {"ours": [], "generate": []}
    for r in range(args.gen_rounds + 1):  # round 0 warms up; who goes first alternates
        problems = pool[r * args.prompts : (r + 1) * args.prompts]
        for name in ("ours", "generate")[:: 1 if r % 2 == 0 else -1]:
            sync()
            t0 = time.perf_counter()
            with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                tokens = generate(name, problems, r)
            sync()
            if r > 0:
                rates[name].append(tokens / (time.perf_counter() - t0))
    return rates


def run_pair(args, seed: int) -> dict[str, dict]:
    """One worker process per side, taking GRPO steps in turn (see Turns); their results by side."""
    workers = {}
    for side in ("ours", "trl"):
        (go_r, go_w), (done_r, done_w) = os.pipe(), os.pipe()
        result, log = (tempfile.NamedTemporaryFile(suffix=suffix, delete=False) for suffix in (".json", ".log"))
        # the worker gets the parent's flags, then its own (argparse keeps the last of a repeated flag)
        cmd = [sys.executable, __file__, *sys.argv[1:], "--worker", side, "--seed", str(seed), "--result", result.name, "--turns", f"{go_r},{done_w}"]
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, pass_fds=(go_r, done_w))
        os.close(go_r)
        os.close(done_w)
        workers[side] = dict(proc=proc, go=go_w, done=done_r, result=result.name, log=log.name)

    def wait(side: str, exit: bool = False) -> None:  # for the worker's turn (exit: its process) to end
        w = workers[side]
        if w["proc"].wait() != 0 if exit else not os.read(w["done"], 1):  # read b"": the worker is gone
            w["proc"].wait()
            raise RuntimeError(f"{side} worker failed:\n{Path(w['log']).read_text()[-8000:]}")

    for side in workers:
        wait(side)  # set up and ready to start
    for step in range(args.steps):
        for side in ("ours", "trl") if step % 2 == 0 else ("trl", "ours"):  # who goes first alternates
            os.write(workers[side]["go"], b"g")
            wait(side)
    for w in workers.values():  # all done: let them finish (none tears down while the other is timed)
        os.write(w["go"], b"g")
    for side in workers:
        wait(side, exit=True)
    return {side: json.loads(Path(w["result"]).read_text()) for side, w in workers.items()}


def report(args, rates, ours, trl) -> str:
    w, nan = args.warmup, float("nan")
    med = lambda xs: statistics.median(xs) if xs else nan  # noqa: E731
    pick = lambda runs, key: [x for run in runs for x in run[key][w:]]  # noqa: E731
    rate = lambda runs, num, den: [n / s for run in runs for n, s in list(zip(run[num], run[den]))[w:]]  # noqa: E731
    mem = lambda runs, key: med([r["memory"][key] for r in runs])  # noqa: E731
    (o_steps, o_gen), (t_steps, t_gen) = [(pick(runs, "steps"), pick(runs, "gen_s")) for runs in (ours, trl)]
    o_flops = med(rate(ours, "update_flops", "updates")) / 1e12
    peak = args.peak_tflops or next((v[args.precision == "bf16"] for k, v in DENSE_PEAK_TFLOPS.items() if k in DEVICE), None)
    rows = [("", "this project", "baseline", "ratio")]

    def row(name, a, b, higher_is_better=True, fmt="{:.1f}"):
        ratio = (a / b if higher_is_better else b / a) if a and b else nan
        rows.append((name, fmt.format(a), fmt.format(b), f"{ratio:.2f}x" if ratio == ratio else "-"))

    def late_reward(runs):  # mean over the last half of each run's steps, and its standard error across them
        late = [r for run in runs for r in run["rewards"][len(run["rewards"]) // 2 :]]
        return statistics.fmean(late), (statistics.stdev(late) if len(late) > 1 else 0.0) / len(late) ** 0.5

    row("(a) rollout tokens/s (vs plain generate)", med(rates["ours"]), med(rates["generate"]), fmt="{:.0f}")
    row("(b/d) GRPO step, s (vs TRL GRPOTrainer)", med(o_steps), med(t_steps), False, "{:.2f}")
    row("      GRPO steps/s", 1 / med(o_steps), 1 / med(t_steps), fmt="{:.3f}")
    row("      of which generation, s", med(o_gen), med(t_gen), False, "{:.2f}")
    row("      the rest (scoring, ref log-probs, update), s", med(o_steps) - med(o_gen), med(t_steps) - med(t_gen), False, "{:.2f}")
    rows.append(("      of which old-policy + reference log-probs, s", f"{med(pick(ours, 'logp_s')):.2f}", "-", "-"))
    row("(c) peak memory added by training, MB", mem(ours, "added_mb"), mem(trl, "added_mb"), False, "{:.0f}")
    row("    peak memory of the process, MB", mem(ours, "peak_mb"), mem(trl, "peak_mb"), False, "{:.0f}")
    (o_r, o_se), (t_r, t_se) = late_reward(ours), late_reward(trl)
    rows.append((f"mean reward, steps {args.steps // 2 + 1}-{args.steps} ({args.reward})", f"{o_r:.3f} ± {o_se:.3f}", f"{t_r:.3f} ± {t_se:.3f}", f"diff {o_r - t_r:+.3f}"))
    rows.append(("update: time / model TFLOP/s", f"{med(pick(ours, 'updates')):.2f} s / {o_flops:.3f}", "-", f"MFU {o_flops / peak:.1%}" if peak else "-"))
    rows.append(("rollout inside the step: tokens/s", f"{med(rate(ours, 'gen_tokens', 'gen_s')):.0f}", "-", "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(wd) if i == 0 else c.rjust(wd) for i, (c, wd) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    for name, runs in (("this project", ours), ("TRL", trl)):
        curve = [statistics.fmean(step) for step in zip(*(run["rewards"] for run in runs))]
        lines.append(f"mean reward by step, {name}: " + " ".join(f"{r:.3f}" for r in curve))
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, choices in (("--model", ["tiny", "qwen2-0.5b"]), ("--precision", ["fp32", "bf16"]), ("--reward", ["steps", "answer"])):
        p.add_argument(flag, choices=choices, default=choices[0])
    for flag, default, help_ in [
        ("--group-size", 8, "G"), ("--prompts", 16, "prompts (groups) per GRPO step"), ("--max-new-tokens", 64, None),
        ("--lr", 1e-4, None), ("--beta", 0.04, None), ("--steps", 8, "GRPO steps per run and side"),
        ("--warmup", 2, "first steps of each run left out of the timings"), ("--rounds", 2, "runs per side (each with its own seed)"),
        ("--gen-rounds", 12, "timed repetitions of (a) per side"), ("--threads", 2, "torch threads on CPU"), ("--seed", 0, None),
        ("--mu", 1, "updates per rollout (grpo.mu; TRL's num_iterations); >1 needs log pi_old"),
    ]:
        p.add_argument(flag, type=type(default), default=default, help=help_)
    p.add_argument("--old-logp-from", choices=["trainer", "sampler"], default="trainer",
                   help="grpo.old_logp_from: log pi_old by a policy forward after the rollout, or the sampler's own log-probs")
    p.add_argument("--warmstart-steps", type=int, default=None, help="supervised warm start of the tiny model (default: the config's)")
    p.add_argument("--profile", action="store_true", help="also print each side's top operators over one step (the first timed one)")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense peak of the device, for MFU")
    p.add_argument("--json", default=None, help="also write the raw measurements here")
    for hidden in ("--worker", "--result", "--turns"):  # a worker child process's own flags
        p.add_argument(hidden, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not 1 <= args.warmup < args.steps:
        p.error(f"need 1 <= --warmup < --steps, got --warmup {args.warmup} --steps {args.steps}")
    return args


def main() -> None:
    args = parse_args()
    if not CUDA:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.worker:
        Path(args.result).write_text(json.dumps((worker_ours if args.worker == "ours" else worker_trl)(args)))
        return
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    load, t0 = os.getloadavg(), time.time()
    print(f"device: {DEVICE}, torch threads {torch.get_num_threads()}, load average {load[0]:.1f} / {load[1]:.1f} (1 / 5 min)", flush=True)
    rates = rollout_throughput(args)
    print(f"(a) done in {time.time() - t0:.0f} s", flush=True)
    ours, trl = [], []
    for r in range(args.rounds):
        t1, results = time.time(), run_pair(args, seed=args.seed + r)
        ours.append(results["ours"])
        trl.append(results["trl"])
        print(f"round {r + 1} of (b)-(d) done in {time.time() - t1:.0f} s", flush=True)
    settings = (f"model={args.model}, G={args.group_size}, {args.prompts} prompts/step, {args.max_new_tokens} new tokens, lr={args.lr}, "
                f"mu={args.mu}, old log-probs from the {args.old_logp_from} (TRL: its own forward), "
                f"beta={args.beta}, {args.precision}, {args.steps} steps x {args.rounds} rounds (first {args.warmup} untimed)")
    load_end = os.getloadavg()
    print(f"\n{settings}\nload average at the end {load_end[0]:.1f} / {load_end[1]:.1f}; total {time.time() - t0:.0f} s\n")
    print(report(args, rates, ours, trl))
    for name, runs in (("this project", ours), ("TRL", trl)):
        if runs[0]["profile"]:
            print(f"\nProfile of one GRPO step, {name} (round 1, step {args.warmup + 1}):\n{runs[0]['profile']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": settings, "rates": rates, "ours": ours, "trl": trl, "load": [load, load_end]}, indent=1))


if __name__ == "__main__":
    main()
