#!/usr/bin/env bash
# The schedule files that configs/benchmark/fmnist-p1-learned.yaml reads, made for the shipped fmnist-p1 on its
# float32 network (LD3's gradient in the grid is a finite difference, which bf16 rounding would swamp):
# - GITS (arXiv 2405.11326), the paper's recipe: 256 teacher samples, iPNDM teacher on a 10x finer polynomial grid,
#   NFE 3, 5, 6, 10. Its cost does not depend on the student, so this grid serves every solver.
# - LD3 (arXiv 2405.15506) started from that GITS grid: 24 teacher samples (iPNDM, 60 steps), 25 Adam steps at lr 0.03,
#   for iPNDM, DPM-Solver++(3M) and UniPC at NFE 3, 5, 6, 10 (fewer samples than the paper's 100, to fit a 2-core
#   CPU: every Adam step costs 2 (NFE - 1) + 5 solves of the 24 samples).
#   bash scripts/fmnist_p1_schedules.sh [LANES]      # LANES searches at once, one thread each (default 2)
# Resumable: a schedule file that exists is kept (delete it to search again).
set -euo pipefail
lanes=${1:-2}
export out=results/schedules
for n in 5 6 3 10; do
  f=$out/fmnist-p1-ipndm-gits-nfe$n.json
  [ -e "$f" ] || OMP_NUM_THREADS=$lanes diffsampler search-schedule --method gits --model fmnist-p1 --solver ipndm \
    --nfe "$n" --set dtype=float32 --set precision=float32 --out "$f"
done
for n in 5 6 3 10; do for s in ipndm dpmpp unipc; do echo "$s $n"; done; done |
  xargs -P "$lanes" -L 1 bash -c 'set -o pipefail
    f=$out/fmnist-p1-$0-ld3-nfe$1.json
    [ -e "$f" ] || OMP_NUM_THREADS=1 diffsampler search-schedule --method ld3 --model fmnist-p1 --solver "$0" \
      --nfe "$1" --set dtype=float32 --set precision=float32 --num-samples 24 --set iterations=25 --set lr=0.03 \
      --set init=$out/fmnist-p1-ipndm-gits-nfe$1.json --out "$f" | tail -n 1'
