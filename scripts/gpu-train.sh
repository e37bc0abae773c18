#!/usr/bin/env bash
# Train one config on the GPU machine and bring the checkpoint back (see ../shared/gpu/README.md).
#
# Send it as the command of one GPU run, from the checkout root:
#   bash scripts/gpu-train.sh configs/train/fmnist-p1.yaml [key=value ...]   (each passed on as --set key=value)
# The run folder lives in $RUNS/<name> (default /root/runs), outside the checkout, so it survives between commands
# while the machine stays warm: sending the same command again resumes from train-state.pt (the
# configs stop themselves after time_limit_minutes, inside the 10-minute limit of one command).
# Fashion-MNIST comes from /root/stage when the data were brought there, else from the Debian path.
# Back under $OUT/<name>/ come model.pt (EMA weights, under 16 MiB), config.yaml, loss.csv, the
# latest sample grid and the run's last lines of output; train-state.pt (weights, EMA and Adam
# state, too big to come back) stays on the machine.
set -euo pipefail
config=${1:?usage: bash scripts/gpu-train.sh CONFIG.yaml [key=value ...]}
shift
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -d /tmp/site ] && export PYTHONPATH="$PYTHONPATH:/tmp/site"

name=$(python3 -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["name"])' "$config")
sets=()
for arg in "$@"; do
  case "$arg" in name=*) name=${arg#name=} ;; esac
  sets+=(--set "$arg")
done
runs=${RUNS:-/root/runs}
extra=(--out "$runs")
[ -f /root/stage/train-images-idx3-ubyte.gz ] && extra+=(--data fashion-mnist=/root/stage)
resume=()
[ -f "$runs/$name/train-state.pt" ] && resume=(--resume)

out=${OUT:-/tmp/out}/$name
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -m diffsampler train-model --config "$config" "${resume[@]}" "${extra[@]}" "${sets[@]}" 2>&1 | tail -n 40 | tee "$out/train.log"

run=$runs/$name
cp "$run/model.pt" "$run/config.yaml" "$run/loss.csv" "$out/"
grid=$(ls "$run"/grid-*.png 2>/dev/null | tail -n 1 || true)
[ -n "$grid" ] && cp "$grid" "$out/"
sha256sum "$out/model.pt"
tail -n 3 "$out/loss.csv"
