#!/usr/bin/env bash
# Run every strategy for a few GRPO steps on this GPU machine and print what it saw.
#
#   bash scripts/gpu_smoke.sh                  # all GPUs up to 2 per run; outputs/gpu_smoke/<time>/
#   DEVICES=8 bash scripts/gpu_smoke.sh        # more processes per run
#   STRATEGIES="fsdp deepspeed_zero3" bash scripts/gpu_smoke.sh
#   ACCELERATOR=cpu bash scripts/gpu_smoke.sh  # the same checks on CPU, 2 processes (tests this script)
#
# For each strategy (auto on 1 GPU; ddp, fsdp, deepspeed_zero2, deepspeed_zero3 on DEVICES GPUs):
#   1. train: python train.py debug=default grpo.steps=3 strategy=S trainer.accelerator=gpu, with rewards
#      that have spread inside groups (so every step updates); checks the exported HF model (full shapes,
#      moved from the start) and the logged metrics;
#   2. resume: from the step-2 checkpoint to step 3 under the same strategy; the export must match run 1's;
#   3. equivalence: one update on a fixed rollout batch, DEVICES processes vs 1 (same parameters).
# Then a 2-job Hydra sweep (-m strategy=ddp,fsdp) must give exactly one folder per job.
# What CPU CI cannot check and this does: NCCL, CUDA memory, Lightning's DeepSpeed on CUDA (CI uses the
# CPU path of grpo.distributed.DeepSpeedStrategy), bf16 if you add PRECISION=bf16-mixed.
# Exit status: 0 when every check passed; the summary table says which did not.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
ACCELERATOR=${ACCELERATOR:-gpu}
if [ "$ACCELERATOR" = gpu ]; then
  GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
  if [ "${GPUS:-0}" -lt 1 ]; then
    echo "gpu_smoke: no CUDA GPU visible to torch ($("$PY" -c 'import torch; print(torch.__version__)')); nothing to do" >&2
    exit 2
  fi
else
  GPUS=2  # ACCELERATOR=cpu: 2 processes over gloo
fi
DEVICES=${DEVICES:-$(( GPUS < 2 ? GPUS : 2 ))}
STRATEGIES=${STRATEGIES:-"auto ddp fsdp deepspeed_zero2 deepspeed_zero3"}
PRECISION=${PRECISION:-32-true}
OUT=${OUT:-outputs/gpu_smoke/$(date +%Y-%m-%d_%H-%M-%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONPATH="$PWD/tests:$PWD/tests/distributed${PYTHONPATH:+:$PYTHONPATH}"
COMMON=(debug=default "model.cache_dir=$OUT/cache" reward._target_=distributed_testkit.DigitShareSteps
        "trainer.accelerator=$ACCELERATOR" "trainer.precision=$PRECISION"
        callbacks.model_checkpoint.every_n_epochs=1 callbacks.model_checkpoint.save_top_k=-1)

echo "== gpu_smoke: $ACCELERATOR, $GPUS device(s), $DEVICES per multi-process run, precision $PRECISION, outputs in $OUT"
"$PY" - <<'EOF'
import torch, lightning, transformers
try:
    import deepspeed; ds = deepspeed.__version__
except Exception as e:  # noqa: BLE001
    ds = f"not importable ({e})"
gpu = f"{torch.cuda.get_device_name(0)}; CUDA {torch.version.cuda}, NCCL {'.'.join(map(str, torch.cuda.nccl.version()))}" if torch.cuda.is_available() else "no GPU"
print(f"   {gpu}; torch {torch.__version__}; lightning {lightning.__version__}; transformers {transformers.__version__}; deepspeed {ds}")
EOF

declare -a SUMMARY
status=0
record() {  # strategy, check, ok|FAIL, detail
  SUMMARY+=("$(printf '%-16s %-12s %-5s %s' "$1" "$2" "$3" "$4")")
  [ "$3" = ok ] || status=1
}
timed() {  # log file, command...: runs it, prints seconds, returns its status
  local log=$1; shift
  local t0=$SECONDS
  "$@" >"$log" 2>&1
  local rc=$?
  echo $(( SECONDS - t0 ))
  return $rc
}

# The warm start is built once, on one process, before any multi-process run.
"$PY" train.py "${COMMON[@]}" grpo.steps=1 eval.every_n_steps=100 "hydra.run.dir=$OUT/warm" >"$OUT/warm.log" 2>&1 \
  || { echo "gpu_smoke: the 1-GPU warm-up run failed, see $OUT/warm.log" >&2; tail -30 "$OUT/warm.log" >&2; exit 1; }

for S in $STRATEGIES; do
  N=$DEVICES; [ "$S" = auto ] && N=1
  RUN=$OUT/$S
  echo "== $S on $N $ACCELERATOR device(s)"
  if secs=$(timed "$RUN.log" "$PY" train.py "${COMMON[@]}" grpo.steps=3 "strategy=$S" "trainer.devices=$N" "hydra.run.dir=$RUN"); then
    detail=$("$PY" - "$RUN" "$OUT/cache" <<'EOF'
import sys, glob, re
from pathlib import Path
import torch
from transformers import AutoModelForCausalLM
from grpo_testkit import read_scalars
run, cache = Path(sys.argv[1]), Path(sys.argv[2])
start = dict(AutoModelForCausalLM.from_pretrained([p for p in glob.glob(f"{cache}/warmstart-*") if Path(p).is_dir() and not p.endswith(".tmp")][0]).named_parameters())
final = dict(AutoModelForCausalLM.from_pretrained(run / "export").named_parameters())
assert start.keys() == final.keys() and all(final[k].shape == start[k].shape for k in start), "export is not the full model"
moved = max((final[k] - start[k]).abs().max().item() for k in start)
assert moved > 0, "the policy did not move"
s = read_scalars(run / "tb")
log = (run.parent / (run.name + ".log")).read_text()
backend = re.search(r"distributed_backend=(\w+)", log)
ckpt = sorted((run / "checkpoints").glob("epoch=*"))
grad = f"{s['train/grad_norm'][-1][1]:.3f}" if "train/grad_norm" in s else "n/a (ZeRO)"
print(f"steps {len(s['train/loss'])}, max |dparam| {moved:.2e}, reward {s['rollout/reward_mean'][-1][1]:.3f}, grad_norm {grad}, "
      f"backend {backend.group(1) if backend else 'not logged'}, checkpoint {'folder' if ckpt and ckpt[-1].is_dir() else 'file'}, "
      f"gen {s['perf/gen_time_s'][-1][1]:.2f}s/rollout")
EOF
    ) && record "$S" train ok "${secs}s; $detail" || record "$S" train FAIL "${secs}s; export/metrics check: $detail"
  else
    record "$S" train FAIL "${secs}s; see $RUN.log"; tail -20 "$RUN.log"; continue
  fi

  ckpt=$(ls -d "$RUN"/checkpoints/epoch=1-* 2>/dev/null | head -1)
  if [ -n "$ckpt" ] && secs=$(timed "$RUN-resume.log" "$PY" train.py "${COMMON[@]}" grpo.steps=3 "strategy=$S" "trainer.devices=$N" "ckpt_path='$ckpt'" "hydra.run.dir=$RUN-resume"); then
    detail=$("$PY" - "$RUN/export" "$RUN-resume/export" <<'EOF'
import sys
from transformers import AutoModelForCausalLM
a, b = (dict(AutoModelForCausalLM.from_pretrained(p).named_parameters()) for p in sys.argv[1:3])
diff = max((a[k] - b[k]).abs().max().item() for k in a)
print(f"max |resumed - uninterrupted| {diff:.2e}")
sys.exit(0 if diff < 1e-5 else 1)
EOF
    ) && record "$S" resume ok "${secs}s; $detail" || record "$S" resume FAIL "${secs}s; $detail"
  else
    record "$S" resume FAIL "no step-2 checkpoint or the resumed run failed; see $RUN-resume.log"
  fi

  EQ=$OUT/equivalence; mkdir -p "$EQ"
  [ -f "$EQ/auto.pt" ] || "$PY" tests/distributed/equivalence_worker.py auto 1 "$EQ/auto.pt" "$ACCELERATOR" >"$EQ/auto.log" 2>&1
  if [ "$S" != auto ] && secs=$(timed "$EQ/$S.log" "$PY" tests/distributed/equivalence_worker.py "$S" "$N" "$EQ/$S.pt" "$ACCELERATOR"); then
    detail=$("$PY" - "$EQ/auto.pt" "$EQ/$S.pt" <<'EOF'
import sys, torch
one, two = (torch.load(p, weights_only=False) for p in sys.argv[1:3])
diff = max((one["policy"][k] - two["policy"][k]).abs().max().item() for k in one["policy"])
loss = abs(one["metrics"]["train/loss"] - two["metrics"]["train/loss"])
checks = {"reference frozen": two["reference_frozen"], "copy_weights": two["copied"], "gathered once": two["stayed_gathered"],
          "disjoint questions": not set(two["questions"][0]) & set(two["questions"][-1]) or len(two["questions"]) == 1}
bad = [k for k, v in checks.items() if not v]
print(f"{two['world']} procs vs 1: max |dparam| {diff:.2e}, |dloss| {loss:.1e}" + (f"; FAILED: {bad}" if bad else ""))
sys.exit(0 if diff < 1e-5 and loss < 1e-5 and not bad else 1)
EOF
    ) && record "$S" equivalence ok "${secs}s; $detail" || record "$S" equivalence FAIL "${secs}s; $detail"
  elif [ "$S" != auto ]; then
    record "$S" equivalence FAIL "worker failed; see $EQ/$S.log"
  fi
done

echo "== Hydra sweep of 2 multi-process jobs (-m strategy=ddp,fsdp)"
if [ "$DEVICES" -ge 2 ] && secs=$(timed "$OUT/sweep.log" "$PY" train.py -m "${COMMON[@]}" grpo.steps=1 strategy=ddp,fsdp "trainer.devices=$DEVICES" \
      "hydra.sweep.dir=$OUT/sweep/\${now:%H-%M-%S}" 'hydra.sweep.subdir=${hydra.job.num}'); then
  folders=$(ls "$OUT/sweep" | wc -l); jobs=$(ls -d "$OUT"/sweep/*/[0-9] 2>/dev/null | wc -l)
  [ "$folders" = 1 ] && [ "$jobs" = 2 ] && record sweep folders ok "${secs}s; 1 sweep folder, 2 job folders" \
    || record sweep folders FAIL "$folders sweep folder(s), $jobs job folder(s)"
elif [ "$DEVICES" -ge 2 ]; then
  record sweep folders FAIL "see $OUT/sweep.log"
fi

echo
echo "== gpu_smoke summary ($OUT)"
printf '%s\n' "${SUMMARY[@]}"
exit $status
