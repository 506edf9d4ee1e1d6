#!/usr/bin/env bash
# Times two builds of crates/gn-module/benches/kernel_matrix.rs row by row, alternating them
# within each row (old, new; new, old; old, new), so that the machine's drift over the minutes
# a whole round takes falls on both sides alike. Writes OUT/{old,new}_{1,2,3}.tsv, one file per
# repetition in the bench's own format, for tools/kernel_matrix_compare.py.
#
#   tools/kernel_matrix_interleave.sh OLD_BINARY NEW_BINARY OUT_DIR [ROW_LIST]
#
# ROW_LIST: a file of row names (backend<TAB>dtype<TAB>shape<TAB>layout<TAB>act), by default
# every row of the matrix (listed by a quick run of OLD_BINARY).
set -euo pipefail
old=$(realpath "$1"); new=$(realpath "$2"); out=$3; rows=${4:-}
mkdir -p "$out"
# The allocator settings of gn_module::alloc (freed memory kept).
export GLIBC_TUNABLES=glibc.malloc.trim_threshold=1073741824:glibc.malloc.mmap_threshold=33554432
export GN_MATRIX_BUDGET_MS=${GN_MATRIX_BUDGET_MS:-100}
if [ -z "$rows" ]; then
    rows=$out/rows.txt
    GN_MATRIX_BUDGET_MS=0 "$old" | awk -F'\t' 'NR > 1 && $6 == "forward" {print $1"\t"$2"\t"$3"\t"$4"\t"$5}' > "$rows"
fi
header=$'backend\tdtype\tshape\tlayout\tact\tpass\tmedian_us\tmin_us'
for f in old_1 old_2 old_3 new_1 new_2 new_3; do echo "$header" > "$out/$f.tsv"; done
echo "start $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" > "$out/log"
while IFS= read -r row; do
    for rep in 1 2 3; do
        if [ "$rep" = 2 ]; then order="new old"; else order="old new"; fi
        for side in $order; do
            bin=$old; [ "$side" = new ] && bin=$new
            GN_MATRIX_FILTER="$row" "$bin" | tail -n +2 >> "$out/${side}_$rep.tsv"
        done
    done
done < "$rows"
echo "end $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/log"
