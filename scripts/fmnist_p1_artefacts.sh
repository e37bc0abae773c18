#!/usr/bin/env bash
# The artefacts that configs/benchmark/fmnist-p1-full.yaml reads, made for the shipped fmnist-p1: one AMED predictor
# per student (AMED-Solver; AMED-Plugin on iPNDM and on DPM-Solver++, the latter on its logSNR grid) and NFE 3-10
# (1,280 latents, batch 32, balanced intervals, the network in precision auto as the table runs it), then the
# DPM-Solver-v3 statistics (configs/ems/fmnist-p1.yaml).
# An AMED step costs 2 NFE: odd budgets use the analytical first step (afs=true, the paper's NFE 3, 5, 7, 9) and even
# budgets do without it (afs=false), as the benchmark's auto_afs plans those cells.
#   bash scripts/fmnist_p1_artefacts.sh [LANES]      # LANES trainings at once, one thread each (default 2)
# Rerun after an interruption: train-amed keeps every predictor that is already current.
set -euo pipefail
lanes=${1:-2}
for n in 3 4 5 6 7 8 9 10; do for s in amed ipndm dpmpp; do echo "$s $n $((n % 2))"; done; done |
  xargs -P "$lanes" -L 1 bash -c 'set -o pipefail
    afs=$([ "$2" = 1 ] && echo true || echo false)
    OMP_NUM_THREADS=1 diffsampler train-amed --model fmnist-p1 --set student="$0" --nfe "$1" --set afs="$afs" \
      --set num_latents=1280 --batch-size 32 --set balance_intervals=true --set precision=auto --out results/amed \
      --name "fmnist-p1-$0-nfe$1" | tail -n 1'
diffsampler compute-ems --config configs/ems/fmnist-p1.yaml
