#!/usr/bin/env bash
# Runs the PyTorch mirror (tools/torch_train_reference.py) on every run of a finished
# batch-size study, each from its own config.json (same recipe, data, order and crops), into
# STUDY_DIR/torch/<run>/; skips runs already done. Then redraw the study with both:
#   tools/torch_study.sh STUDY_DIR PYTHON [THREADS]
#   cargo run --release --example batch_size_study -- --artifact-dir STUDY_DIR --replot
set -u
dir=$1 python=$2 threads=${3:-1}
here=$(cd "$(dirname "$0")" && pwd)
for config in "$dir"/*/config.json; do
  run=$(basename "$(dirname "$config")")
  [ "$run" = torch ] && continue
  out=$dir/torch/$run
  [ -f "$out/metrics.json" ] && continue
  mkdir -p "$dir/torch"
  start=$(date +%s)
  nice -n 10 "$python" "$here/torch_train_reference.py" --config "$config" --threads "$threads" \
    --out "$out" > "$dir/torch/$run.log" 2>&1
  rc=$?
  echo "$run: $(( $(date +%s) - start )) s, rc $rc"
done
