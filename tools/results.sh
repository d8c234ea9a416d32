#!/usr/bin/env bash
# `make results`: the real-data results of the README (a benchmark, not a test; hours on a
# 2-core CPU). For each variant and fold: pretrain -> main -> one-shot evaluation with controls;
# then tcmn-cv aggregates the folds. Re-running skips the runs whose checkpoint / summary exists.
#   VARIANTS="tcmn no_ltc random_init" FOLDS="0 1 2 3 4" bash tools/results.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=${OUT:-logs/results}
REAL=${REAL:-../shared/data/real}
FOLDS=${FOLDS:-"0 1 2 3 4"}
VARIANTS=${VARIANTS:-"tcmn no_ltc random_init"}
export WANDB_MODE=${WANDB_MODE:-offline}
common="extras.print_config=false"

[ -f data/cvc_clinicdb/meta.json ] || $BIN/tcmn-prepare dataset=cvc_clinicdb src="$REAL/cvc_clinicdb"
[ -f data/echonet/meta.json ] || $BIN/tcmn-prepare dataset=echonet src="$REAL/echonet_dynamic_sample"

for variant in $VARIANTS; do
  case $variant in
    tcmn) extra="" ;;
    no_ltc) extra="model.loss.beta=0" ;;              # the paper's ablation "w/o L_tc"
    random_init) extra="model.net.pretrained=null" ;;  # no ImageNet weights
    *) echo "unknown variant $variant"; exit 2 ;;
  esac
  for fold in $FOLDS; do
    d=$OUT/cvc/$variant/fold_$fold
    [ -f $d/pretrain/checkpoints/last.ckpt ] || $BIN/tcmn-train experiment=cpu_cvc_pretrain data.fold=$fold $extra hydra.run.dir=$d/pretrain $common
    [ -f $d/main/checkpoints/last.ckpt ] || $BIN/tcmn-train experiment=cpu_cvc data.fold=$fold $extra init_from=$d/pretrain/checkpoints/last.ckpt hydra.run.dir=$d/main $common
    [ -f $d/eval/summary.json ] || $BIN/tcmn-eval data=cvc ckpt=$d/main/checkpoints/last.ckpt fold=$fold split=test data.eval_size=192 controls=true hydra.run.dir=$d/eval
  done
  $BIN/tcmn-cv dir=$OUT/cvc/$variant out=$OUT/cvc/$variant/cv
done

# EchoNet-Dynamic sample: ED mask given, ES scored (unseen class and modality)
for fold in 0; do
  d=$OUT/cvc/tcmn/fold_$fold
  [ -f $d/main/checkpoints/last.ckpt ] && $BIN/tcmn-eval data=echonet ckpt=$d/main/checkpoints/last.ckpt split=all data.eval_size=112 controls=true hydra.run.dir=$OUT/echonet/cvc_fold_$fold
done
if [ -f logs/demo/main/checkpoints/last.ckpt ]; then
  $BIN/tcmn-eval data=echonet ckpt=logs/demo/main/checkpoints/last.ckpt split=all data.eval_size=112 controls=true hydra.run.dir=$OUT/echonet/synthetic_demo
fi
