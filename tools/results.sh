#!/usr/bin/env bash
# `make results`: the real-data results of the README (a benchmark, not a test: hours on a
# 2-core CPU). For each fold and variant: pretrain -> main -> one-shot evaluation with the
# wrong-first-mask controls; then tcmn-cv aggregates the folds of each variant, and the EchoNet
# sample is evaluated with a CVC-trained and the synthetic-trained (make demo) model.
# Re-running skips what exists (checkpoints, summaries).
#   FOLDS="0 1 2 3 4" VARIANTS="tcmn no_ltc random_init visible_objects" bash tools/results.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=${OUT:-logs/results}
REAL=${REAL:-../shared/data/real}
FOLDS=${FOLDS:-"0 1 2 3 4"}
VARIANTS=${VARIANTS:-"tcmn no_ltc random_init visible_objects"}
# the objectness ablation (no random-shape pseudo-clips) on these folds only
OBJECTNESS_FOLDS=${OBJECTNESS_FOLDS-0}
export WANDB_MODE=${WANDB_MODE:-offline}
# several torch processes on few cores: let idle OpenMP threads sleep instead of spinning
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
common="extras.print_config=false ${EXTRA:-}"

[ -f data/cvc_clinicdb/splits.json ] || $BIN/tcmn-prepare dataset=cvc_clinicdb src="$REAL/cvc_clinicdb"
[ -f data/echonet/splits.json ] || $BIN/tcmn-prepare dataset=echonet src="$REAL/echonet_dynamic_sample"

run_fold() {  # variant fold extra-overrides...
  local variant=$1 fold=$2; shift 2
  local d=$OUT/cvc/$variant/fold_$fold
  [ -f $d/pretrain/checkpoints/last.ckpt ] || $BIN/tcmn-train experiment=cpu_cvc_pretrain data.fold=$fold "$@" hydra.run.dir=$d/pretrain $common
  [ -f $d/main/checkpoints/last.ckpt ] || $BIN/tcmn-train experiment=cpu_cvc data.fold=$fold "$@" init_from=$d/pretrain/checkpoints/last.ckpt hydra.run.dir=$d/main $common
  [ -f $d/eval/summary.json ] || $BIN/tcmn-eval data=cvc ckpt=$d/main/checkpoints/last.ckpt fold=$fold split=test data.eval_size=192 controls=true hydra.run.dir=$d/eval ${EVAL_EXTRA:-}
}

for fold in $FOLDS; do
  for variant in $VARIANTS; do
    case $variant in
      tcmn) run_fold tcmn $fold ;;
      no_ltc) run_fold no_ltc $fold model.loss.beta=0 ;;                # the paper's ablation "w/o L_tc"
      random_init) run_fold random_init $fold model.net.pretrained=null ;;  # no ImageNet weights
      visible_objects) run_fold visible_objects $fold data.pseudo.random_object.invisible_p=0 ;;  # drawn random shapes
      *) echo "unknown variant $variant"; exit 2 ;;
    esac
  done
  case " $OBJECTNESS_FOLDS " in
    *" $fold "*) run_fold no_objectness $fold data.pseudo.random_object_p=0 ;;
  esac
done
for variant in tcmn no_ltc random_init visible_objects no_objectness; do
  [ -d $OUT/cvc/$variant ] && $BIN/tcmn-cv dir=$OUT/cvc/$variant
done

# EchoNet-Dynamic sample (all 10 videos): ED mask given, ES scored: an unseen class and modality
if [ -f $OUT/cvc/tcmn/fold_0/main/checkpoints/last.ckpt ] && [ ! -f $OUT/echonet/cvc_fold_0/summary.json ]; then
  $BIN/tcmn-eval data=echonet ckpt=$OUT/cvc/tcmn/fold_0/main/checkpoints/last.ckpt split=all data.eval_size=112 controls=true hydra.run.dir=$OUT/echonet/cvc_fold_0
fi
if [ -f logs/demo/main/checkpoints/last.ckpt ] && [ ! -f $OUT/echonet/synthetic_demo/summary.json ]; then
  $BIN/tcmn-eval data=echonet ckpt=logs/demo/main/checkpoints/last.ckpt split=all data.eval_size=112 controls=true hydra.run.dir=$OUT/echonet/synthetic_demo
fi
