#!/bin/sh
# The `cpu` reproduction of docs/reproduction.md, each experiment timed: two local submitit workers
# with one torch thread each (the preset's), sharing one zoo (models are trained once).
#   sh docs/reproduction/run_cpu.sh [CIFAR-10 tarball or folder] [output folder]
set -e
DATA=${1:-../shared/datasets/cifar10-jpeg.tar.gz}
OUT=${2:-runs/cpu}
for exp in stitch similarity sanity; do
    start=$(date +%s)
    groupcalc experiment "$exp" --preset cpu --data-dir "$DATA" --out "$OUT/$exp" \
        --executor local --workers 2 --no-progress
    echo "$exp: $(( $(date +%s) - start )) s wall-clock" | tee -a "$OUT/times.txt"
done
