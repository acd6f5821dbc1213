#!/usr/bin/env bash
# The demo experiments of docs/results.md, one after another (each 1,500-step run at 32 px
# takes ~13 min on a 2-core CPU, each evaluation ~5-10 min; steps5k ~45 min, px64 about four
# times a 32 px run). Usage:
#
#     bash benchmarks/demo_experiments.sh OUT [EXPERIMENT ...]
#
# OUT holds one workdir per run and a log per step; EXPERIMENT names which to run (default: all,
# in the order below). Every run uses configs/synthetic.py (the demo) with the overrides shown.
set -euo pipefail
out=${1:?usage: demo_experiments.sh OUT [EXPERIMENT ...]}
shift
mkdir -p "$out"
cd "$(dirname "$0")/.."

train() {  # train NAME [--config.FIELD=VALUE ...]
  local name=$1; shift
  # eval every 250 steps (the demo: 500) for the curves; it does not change the training.
  python run_train.py --config=configs/synthetic.py --workdir="$out/$name" \
      --config.eval_every_steps=250 "$@" >> "$out/$name.train.log" 2>&1  # a resume appends
}
evaluate() {  # evaluate NAME [SUFFIX]: the evaluation networks are trained once per image
  # size, in OUT/eval_classifiers[SUFFIX]
  python -m attrdis.evaluate --workdir="$out/$1" --classifier_dir="$out/eval_classifiers${2:-}" \
      > "$out/$1.eval.log" 2>&1
}
# The model the demo had before: the paper's architecture at a narrow width (instance norm,
# Adam 2e-4/0.5, two residual blocks).
PAPER_SHAPED=(--config.model.norm=instance --config.optimizer.learning_rate=2e-4
              --config.optimizer.b1=0.5 --config.model.encoder_widths='(16,32,32)'
              --config.model.num_res_blocks=2 --config.model.decoder_up_widths='(32,16)'
              --config.model.classifier_widths='(16,32)')
# Reconstruction alone: every other weight 0.
REC_ONLY=(--config.loss_weights.cls_x=0 --config.loss_weights.dis=0
          --config.loss_weights.cls_trn=0 --config.loss_weights.adv=0)

# The demo with the paper's λ_rec = 10 (the demo uses 50).
REC10=(--config.loss_weights.rec=10)

run() {
  case $1 in
    demo) train demo && evaluate demo ;;
    rec10) train rec10 "${REC10[@]}" && evaluate rec10 ;;
    rec_only) train rec_only "${REC10[@]}" "${REC_ONLY[@]}" ;;
    rec10_dis0) train rec10_dis0 "${REC10[@]}" --config.loss_weights.dis=0 && evaluate rec10_dis0 ;;
    paper_shaped) train paper_shaped "${REC10[@]}" "${PAPER_SHAPED[@]}" && evaluate paper_shaped ;;
    dis0) train dis0 --config.loss_weights.dis=0 && evaluate dis0 ;;
    seed1) train seed1 --config.seed=1 && evaluate seed1 ;;
    dis0_seed1) train dis0_seed1 --config.seed=1 --config.loss_weights.dis=0 && evaluate dis0_seed1 ;;
    seed2) train seed2 --config.seed=2 && evaluate seed2 ;;
    dis0_seed2) train dis0_seed2 --config.seed=2 --config.loss_weights.dis=0 && evaluate dis0_seed2 ;;
    # Training length and image size (the demo otherwise):
    steps5k) train steps5k --config.num_train_steps=5000 && evaluate steps5k ;;
    # 15,000 steps (~2 h on 2 cores; run it again to resume where it stopped):
    steps15k) train steps15k --config.num_train_steps=15000 --config.eval_every_steps=1000 \
              --config.checkpoint_every_steps=250 && evaluate steps15k ;;
    # Classifier width (the demo: (16, 64)): a first layer four times as wide.
    cls_wide) train cls_wide --config.model.classifier_widths='(64,64)' && evaluate cls_wide ;;
    px64) train px64 --config.dataset.builder_config=64px --config.image_size=64 \
          && evaluate px64 _64px ;;
    *) echo "error: unknown experiment $1" >&2; exit 2 ;;
  esac
}
experiments=("$@")
[ ${#experiments[@]} -gt 0 ] || experiments=(demo rec10 rec_only rec10_dis0 paper_shaped
                                             dis0 seed1 dis0_seed1 seed2 dis0_seed2 steps5k px64 cls_wide)
for e in "${experiments[@]}"; do
  echo "$(date -u +%H:%M:%S) $e"
  start=$SECONDS
  run "$e" || echo "$e failed (see $out/$e.*.log)"
  echo "$e: $((SECONDS - start)) s" >> "$out/times.txt"
done
