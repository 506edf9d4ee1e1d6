#!/usr/bin/env bash
# Runs ours (the `train` example) and the PyTorch mirror (tools/torch_train_reference.py) on
# the same recipe, GN and BN, batch 32 and 2, three seeds; one run at a time, niced.
#   tools/side_by_side.sh OUT_DIR TRAIN_BINARY PYTHON DATASET_ARGS... -- RECIPE_ARGS...
# Skips runs whose metrics.json exists; tools/side_by_side_table.py summarizes OUT_DIR.
set -u
out=$1 train=$2 python=$3
shift 3
data=() recipe=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do data+=("$1"); shift; done
shift
recipe=("$@")
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
for norm in ${NORMS:-gn bn}; do
  for bs in ${BATCHES:-32 2}; do
    for seed in ${SEEDS:-1 2 3}; do
      for impl in ours torch; do
        dir=$out/$impl-$norm-b$bs-s$seed
        [ -f "$dir/metrics.json" ] && continue
        rm -rf "$dir"
        common=(--norm "$norm" --batch-size "$bs" --seed "$seed" "${data[@]}" "${recipe[@]}")
        start=$(date +%s)
        if [ "$impl" = ours ]; then
          nice -n 10 "$train" "${common[@]}" --artifact-dir "$dir" > "$out/$impl-$norm-b$bs-s$seed.log" 2>&1
        else
          nice -n 10 "$python" "$here/torch_train_reference.py" "${common[@]}" --threads 1 --out "$dir" \
            > "$out/$impl-$norm-b$bs-s$seed.log" 2>&1
        fi
        rc=$?
        echo "$impl $norm b$bs s$seed: $(( $(date +%s) - start )) s, rc $rc"
      done
    done
  done
done
