#!/usr/bin/env bash
# `make results`: the real-data results of the README (a benchmark, not a test: hours on a
# 2-core CPU). For each fold, seed and variant: pretrain -> main -> one-shot evaluation with the
# wrong-first-mask controls; then tcmn-cv aggregates the folds of each variant and compares each
# variant with beta = 0 pair by pair (same fold, seed, initial weights and clips); the EchoNet
# sample is evaluated with a CVC-trained and the synthetic-trained (make demo) model.
#
# Re-running skips what is finished. Each finished evaluation's summary.json (numbers only, no
# image) is also kept under results/<group>/<variant>/<fold[_seed]>/ (tracked by git), and a run
# whose kept summary exists is skipped: a later session resumes where an earlier one stopped.
#
# Without VARIANTS set, the whole plan of the README runs (see plan() below). One block:
#   GROUP=cvc FOLDS="0 1 2 3 4" SEEDS="0 1" VARIANTS="tcmn no_ltc" bash tools/results.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=${OUT:-logs/results}
KEEP=${KEEP:-results}
GROUP=${GROUP:-cvc}
REAL=${REAL:-../shared/data/real}
FOLDS=${FOLDS:-"0 1 2 3 4"}
SEEDS=${SEEDS:-0}
VARIANTS=${VARIANTS:-}
MAIN_EXTRA=${MAIN_EXTRA:-}
# overrides of the pretraining stage (a recipe change); PT_TAG names the pretrainings they make
PRE_EXTRA=${PRE_EXTRA:-}
PT_TAG=${PT_TAG:-}
# evaluate the checkpoints of another group (an evaluation-time change: EVAL_EXTRA) instead of
# training: GROUP=cvc_mem2 CKPT_GROUP=cvc EVAL_EXTRA=propagation.mem_every=2
CKPT_GROUP=${CKPT_GROUP:-$GROUP}
export WANDB_MODE=${WANDB_MODE:-offline}
# several torch processes on few cores: let idle OpenMP threads sleep instead of spinning
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
common="extras.print_config=false ${EXTRA:-}"

[ -f data/cvc_clinicdb/splits.json ] || $BIN/tcmn-prepare dataset=cvc_clinicdb src="$REAL/cvc_clinicdb"
[ -f data/echonet/splits.json ] || $BIN/tcmn-prepare dataset=echonet src="$REAL/echonet_dynamic_sample"

run_name() {  # fold seed -> fold_<k> (seed 0) or fold_<k>_seed_<s>
  if [ "$2" = 0 ]; then echo "fold_$1"; else echo "fold_$1_seed_$2"; fi
}

pretrain() {  # kind fold seed overrides... -> prints the checkpoint; kinds share one pretraining
  local kind=$1 fold=$2 seed=$3; shift 3
  local d=$OUT/cvc/pretrain_$kind$PT_TAG/$(run_name $fold $seed)
  # shellcheck disable=SC2086
  [ -f $d/checkpoints/last.ckpt ] || $BIN/tcmn-train experiment=cpu_cvc_pretrain data.fold=$fold seed=$seed "$@" $PRE_EXTRA hydra.run.dir=$d $common >&2
  echo $d/checkpoints/last.ckpt
}

run_fold() {  # variant fold seed pretrain-kind pretrain-overrides | main-overrides...
  local variant=$1 fold=$2 seed=$3 kind=$4; shift 4
  local name; name=$(run_name $fold $seed)
  local d=$OUT/$GROUP/$variant/$name keep=$KEEP/$GROUP/$variant/$name
  local pt=() main=() seen_bar=0
  for a in "$@"; do
    if [ "$a" = "|" ]; then seen_bar=1; elif [ $seen_bar = 0 ]; then pt+=("$a"); else main+=("$a"); fi
  done
  if [ -f $keep/summary.json ]; then echo "skip $GROUP/$variant/$name (kept in $keep)"; return; fi
  local m=$OUT/$CKPT_GROUP/$variant/$name/main
  if [ "$CKPT_GROUP" = "$GROUP" ]; then
    local init; init=$(pretrain $kind $fold $seed "${pt[@]}")
    # shellcheck disable=SC2086
    [ -f $m/checkpoints/last.ckpt ] || $BIN/tcmn-train experiment=cpu_cvc data.fold=$fold seed=$seed "${main[@]}" $MAIN_EXTRA init_from=$init hydra.run.dir=$m $common
  elif [ ! -f $m/checkpoints/last.ckpt ]; then
    echo "$m/checkpoints/last.ckpt: missing; run GROUP=$CKPT_GROUP first"; exit 1
  fi
  [ -f $d/eval/summary.json ] || $BIN/tcmn-eval data=cvc ckpt=$m/checkpoints/last.ckpt fold=$fold seed=$seed split=test data.eval_size=192 controls=true hydra.run.dir=$d/eval ${EVAL_EXTRA:-}
  mkdir -p $keep && cp $d/eval/summary.json $keep/summary.json
}

# variant -> pretraining kind, its overrides | the main stage's overrides
run_variant() {  # variant fold seed
  local v=$1 f=$2 s=$3
  case $v in
    # the recipe's formulation (experiment=cpu_cvc as it stands; its pretraining has beta = 0,
    # so it shares the beta = 0 pretraining of no_ltc: the pair starts from the same weights)
    tcmn) run_fold tcmn $f $s beta0 model.loss.beta=0 "|" ;;
    # the paper's ablation "w/o L_tc" (beta = 0 in both stages)
    no_ltc) run_fold no_ltc $f $s beta0 model.loss.beta=0 "|" model.loss.beta=0 ;;
    # eq. 1 exactly (raw values, eps 1e-3, beta 0.1) in both stages: the previous recipe
    paper_both) run_fold paper_both $f $s paper model.loss.tc_on=values model.loss.eps=1e-3 model.loss.beta=0.1 model.loss.beta_pretrain=null model.loss.tc_detach_query=false "|" model.loss.tc_on=values model.loss.eps=1e-3 model.loss.beta=0.1 model.loss.tc_detach_query=false ;;
    # main-stage formulations, all from the beta = 0 pretraining (every setting explicit, so
    # that a change of the recipe does not change them)
    paper) run_fold paper $f $s beta0 model.loss.beta=0 "|" model.loss.beta=0.1 model.loss.tc_on=values model.loss.eps=1e-3 model.loss.tc_detach_query=false model.loss.tc_detach_masks=false ;;
    eps8) run_fold eps8 $f $s beta0 model.loss.beta=0 "|" model.loss.beta=0.1 model.loss.tc_on=values model.loss.eps=1e-8 model.loss.tc_detach_query=false ;;
    eps8_dq) run_fold eps8_dq $f $s beta0 model.loss.beta=0 "|" model.loss.beta=0.1 model.loss.tc_on=values model.loss.eps=1e-8 model.loss.tc_detach_query=true ;;
    centred_dq) run_fold centred_dq $f $s beta0 model.loss.beta=0 "|" model.loss.beta=0.1 model.loss.tc_on=centred model.loss.eps=1e-8 model.loss.tc_detach_query=true ;;
    paper_dm) run_fold paper_dm $f $s beta0 model.loss.beta=0 "|" model.loss.beta=0.1 model.loss.tc_on=values model.loss.eps=1e-3 model.loss.tc_detach_masks=true ;;
    paper_dqm) run_fold paper_dqm $f $s beta0 model.loss.beta=0 "|" model.loss.beta=0.1 model.loss.tc_on=values model.loss.eps=1e-3 model.loss.tc_detach_query=true model.loss.tc_detach_masks=true ;;
    paper_b01) run_fold paper_b01 $f $s beta0 model.loss.beta=0 "|" model.loss.tc_on=values model.loss.eps=1e-3 model.loss.beta=0.01 ;;
    paper_b001) run_fold paper_b001 $f $s beta0 model.loss.beta=0 "|" model.loss.tc_on=values model.loss.eps=1e-3 model.loss.beta=0.001 ;;
    head_dq) run_fold head_dq $f $s beta0 model.loss.beta=0 "|" model.loss.beta=0.1 model.loss.tc_on=head model.loss.eps=1e-3 model.loss.tc_detach_query=true ;;
    random_init) run_fold random_init $f $s random_init model.net.pretrained=null "|" model.net.pretrained=null ;;  # no ImageNet weights
    visible_objects) run_fold visible_objects $f $s visible data.pseudo.random_object.invisible_p=0 "|" data.pseudo.random_object.invisible_p=0 ;;
    no_objectness) run_fold no_objectness $f $s no_objectness data.pseudo.random_object_p=0 "|" data.pseudo.random_object_p=0 ;;
    *) echo "unknown variant $v"; exit 2 ;;
  esac
}

SHORT="trainer.max_steps=300 model.loss.start_warm=60 model.loss.end_warm=200"
plan() {  # every block of the README's results, in the order they were run
  local me=$0
  # 1. screening of the L_tc formulations: 2 folds, main stage shortened to 300 steps
  GROUP=screen FOLDS="1 0" VARIANTS="no_ltc paper eps8_dq centred_dq head_dq paper_dqm paper_dm paper_b01 paper_b001" MAIN_EXTRA="$SHORT" bash $me
  GROUP=screen FOLDS=1 VARIANTS=paper_both MAIN_EXTRA="$SHORT" bash $me
  # 2. confirmation: the recipe against beta = 0, 5 folds x 2 seeds (seed 0 on every fold first),
  # evaluated with a memory frame every 5 frames (the paper's, the recipe's setting then)
  GROUP=cvc SEEDS=0 VARIANTS="tcmn no_ltc" EVAL_EXTRA=propagation.mem_every=5 bash $me
  GROUP=cvc SEEDS=1 VARIANTS="tcmn no_ltc" EVAL_EXTRA=propagation.mem_every=5 bash $me
  # 2a. evaluation-time settings of the recipe's checkpoints, screened on folds 0-1 of seed 0
  local kv
  for kv in mem1:propagation.mem_every=1 mem2:propagation.mem_every=2 mem3:propagation.mem_every=3 \
      topk50:propagation.top_k=50 topkall:propagation.top_k=null \
      "s240m2:propagation.mem_every=2 propagation.size=240" "s256m2:propagation.mem_every=2 propagation.size=256"; do
    GROUP=screen_eval/${kv%%:*} CKPT_GROUP=cvc FOLDS="0 1" SEEDS=0 VARIANTS=tcmn EVAL_EXTRA="${kv#*:}" bash $me
  done
  # 2b. the same checkpoints with a memory frame every 2 frames (the recipe's setting now; screened
  # on folds 0-1 of seed 0 among mem_every 1/2/3, top_k 50/all and propagation.size 240/256)
  GROUP=cvc_mem2 CKPT_GROUP=cvc SEEDS="0 1" VARIANTS="tcmn no_ltc" EVAL_EXTRA=propagation.mem_every=2 bash $me
  # 2c. twice the main steps, screened on folds 0-1 (seed 0)
  GROUP=screen_steps FOLDS="0 1" SEEDS=0 VARIANTS=tcmn MAIN_EXTRA="trainer.max_steps=1200" EVAL_EXTRA=propagation.mem_every=2 bash $me
  # 3. the other ablations of the recipe, on some folds
  GROUP=cvc FOLDS="0 1" VARIANTS=random_init bash $me
  GROUP=cvc FOLDS=0 VARIANTS="visible_objects no_objectness" bash $me
  GROUP=cvc FOLDS=0 VARIANTS=echonet bash $me
}
if [ -z "$VARIANTS" ]; then plan; exit 0; fi

for fold in $FOLDS; do
  for seed in $SEEDS; do
    for variant in $VARIANTS; do
      if [ "$variant" = echonet ]; then continue; fi
      run_variant $variant $fold $seed
    done
  done
done

# tables: each variant's folds, and each variant paired against beta = 0
# (written under $OUT/tables: results/ keeps only the runs' summaries, the tables follow from them)
for vdir in $KEEP/$GROUP/*/; do
  v=$(basename $vdir)
  $BIN/tcmn-cv dir=$vdir out=$OUT/tables/$GROUP/$v > /dev/null
  if [ "$v" != no_ltc ] && [ -d $KEEP/$GROUP/no_ltc ]; then
    $BIN/tcmn-cv dir=$vdir compare=$KEEP/$GROUP/no_ltc out=$OUT/tables/$GROUP/$v > /dev/null || true
  fi
done

case " $VARIANTS " in *" echonet "*) ;; *) exit 0 ;; esac
# EchoNet-Dynamic sample (all 10 videos): ED mask given, ES scored: an unseen class and modality
ck=$OUT/cvc/tcmn/fold_0/main/checkpoints/last.ckpt
if [ -f $ck ] && [ ! -f $KEEP/echonet/cvc_fold_0/summary.json ]; then
  $BIN/tcmn-eval data=echonet ckpt=$ck split=all data.eval_size=112 controls=true hydra.run.dir=$OUT/echonet/cvc_fold_0
  mkdir -p $KEEP/echonet/cvc_fold_0 && cp $OUT/echonet/cvc_fold_0/summary.json $KEEP/echonet/cvc_fold_0/
fi
ck=logs/demo/main/checkpoints/last.ckpt
if [ -f $ck ] && [ ! -f $KEEP/echonet/synthetic_demo/summary.json ]; then
  $BIN/tcmn-eval data=echonet ckpt=$ck split=all data.eval_size=112 controls=true hydra.run.dir=$OUT/echonet/synthetic_demo
  mkdir -p $KEEP/echonet/synthetic_demo && cp $OUT/echonet/synthetic_demo/summary.json $KEEP/echonet/synthetic_demo/
fi
