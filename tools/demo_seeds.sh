#!/usr/bin/env bash
# The spread of the `make demo` recipe over seeds (a benchmark, not a test: ~5 minutes a seed on
# a 2-core CPU). For each seed it runs `make demo SEED=<s>` into logs/demo_seeds/<tag>/seed_<s>
# and keeps the two evaluations' summary.json (numbers only) and the run's wall time under
# results/demo/<tag>/seed_<s>/ (tracked by git); a seed whose kept summaries exist is skipped, so
# a later session resumes. Then `tcmn-cv seeds=results/demo/<tag>` writes the range (mean ± std,
# min-max) that `make demo` prints its own run against.
#
# Without TAG set, the plan of the README runs (see plan() below). One block:
#   TAG=beta01 DEMO_EXTRA="model.loss.beta=0.1 model.loss.beta_pretrain=null" bash tools/demo_seeds.sh
# (DEMO_EXTRA: overrides of both stages; DEMO_PRE_EXTRA / DEMO_MAIN_EXTRA: of one stage)
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${TAG:-}
SEEDS=${SEEDS:-"0 1 2 3 4"}
DEMO_EXTRA=${DEMO_EXTRA:-}
DEMO_PRE_EXTRA=${DEMO_PRE_EXTRA:-}
DEMO_MAIN_EXTRA=${DEMO_MAIN_EXTRA:-}
OUT=${OUT:-logs/demo_seeds}
KEEP=${KEEP:-results/demo}
# several torch processes on few cores: let idle OpenMP threads sleep instead of spinning
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

plan() {  # the README's demo results, in the order they were measured
  local me=$0 steps="trainer.max_steps=250" pre_steps="trainer.max_steps=100"
  # the previous recipe: eq. 1 at beta 0.1 in both stages, 100 + 250 steps
  TAG=before DEMO_EXTRA="model.loss.beta=0.1 model.loss.beta_pretrain=null" DEMO_PRE_EXTRA=$pre_steps DEMO_MAIN_EXTRA=$steps bash $me
  # lever 1: L_tc as in the CVC recipe (beta 0.01, main stage only), same steps
  TAG=beta001_steps250 DEMO_PRE_EXTRA=$pre_steps DEMO_MAIN_EXTRA=$steps bash $me
  # lever 2, the recipe: and 150 + 400 steps
  TAG=recipe bash $me
}
if [ -z "$TAG" ]; then plan; exit 0; fi

for s in $SEEDS; do
  d=$OUT/$TAG/seed_$s keep=$KEEP/$TAG/seed_$s
  if [ -f $keep/test.json ] && [ -f $keep/unseen.json ]; then echo "skip $TAG seed $s (kept in $keep)"; continue; fi
  rm -rf "$d"
  start=$(date +%s)
  # the range print at the end of make demo may fail while no range exists yet: the summaries count
  make --no-print-directory demo DEMO="$d" SEED="$s" DEMO_EXTRA="$DEMO_EXTRA" \
    DEMO_PRE_EXTRA="$DEMO_PRE_EXTRA" DEMO_MAIN_EXTRA="$DEMO_MAIN_EXTRA" DEMO_RANGE="$KEEP/$TAG" || true
  end=$(date +%s)
  if [ ! -f $d/eval_test/summary.json ] || [ ! -f $d/eval_unseen/summary.json ]; then
    echo "seed $s: make demo did not finish (see above)"; exit 1
  fi
  mkdir -p $keep
  cp $d/eval_test/summary.json $keep/test.json
  cp $d/eval_unseen/summary.json $keep/unseen.json
  cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
  printf '{"seconds": %d, "cpu": "%s", "cores": %d, "demo_extra": "%s", "demo_pre_extra": "%s", "demo_main_extra": "%s"}\n' \
    $((end - start)) "$cpu" "$(nproc)" "$DEMO_EXTRA" "$DEMO_PRE_EXTRA" "$DEMO_MAIN_EXTRA" > $keep/run.json
done
.venv/bin/tcmn-cv seeds=$KEEP/$TAG
