#!/usr/bin/env bash
# The paper-width reference run (recipe reference-gpu: ResNet-18 width 64, PGD-10 AT with step 2/255,
# batch 128, CUDA graphs, bf16, 2 natural warm-start epochs + 8 AT epochs, vanilla and CIFS alike),
# then clean / FGSM / PGD-20 on the 10,000 test images, the beta_atk sweep and the full-gradient
# attack on 2,000, standard AutoAttack on 1,000. One prepared call on a GPU machine without network.
#
#   bash benchmarks/gpu_reference.sh            # on the GPU machine (about 8 minutes on an H100)
#   bash benchmarks/gpu_reference.sh --tiny     # the same steps on the CPU at toy size (minutes)
#
# Needs a folder .gpu/ in the checkout (git ignores it; carry it to the GPU machine) holding
# cifar10_jpeg.npz (../shared/data/cifar10-jpeg/) and the torchattacks wheel
# (python -m pip download --no-deps torchattacks==3.5.1 -d .gpu). Results go to $OUT (the device
# tool's returned folder) or ./gpu_reference_out: each model's evaluation stages as soon as they
# exist (<model>_stages.json, copied every 20 s) and, at the end, gpu.json (the schema that
# cifs_edu.reference.load reads) and the run log.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
CARRY=${CARRY:-.gpu}
RESULTS=${OUT:-$PWD/gpu_reference_out}
WORK=${WORK:-/tmp/gpu_reference_runs}
DATA=${DATA:-/tmp/cifar10-jpeg}
mkdir -p "$RESULTS" "$WORK"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 CIFS_HOME=${CIFS_HOME:-/tmp/cifs_home} MPLBACKEND=Agg
TINY=(); NAME=gpu
if [ "${1:-}" = "--tiny" ]; then TINY=(--tiny --device cpu); NAME=gpu-tiny; fi

t0=$(date +%s)
"$PY" -c "import torchattacks" 2>/dev/null || "$PY" -m pip install -q --no-deps --no-index "$CARRY"/torchattacks-*.whl
"$PY" scripts/unpack_cifar10_jpeg.py "$CARRY/cifar10_jpeg.npz" "$DATA" > /dev/null
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
echo "setup took $(( $(date +%s) - t0 )) s"

( while sleep 20; do for m in vanilla cifs; do
    [ -f "$WORK/$m/reference_eval.json" ] && cp "$WORK/$m/reference_eval.json" "$RESULTS/${m}_stages.json"; done; done ) &
copier=$!
trap 'kill $copier 2>/dev/null || true' EXIT

"$PY" -m cifs_edu reference --recipe reference-gpu --dataset "folder:$DATA" --out "$WORK" --name "$NAME" \
    --stage attacks --stage channels --stage sweep --stage full_grad --stage autoattack --no-progress "${TINY[@]}" \
    2>&1 | tee "$RESULTS/gpu_reference.log"
for m in vanilla cifs; do cp "$WORK/$m/reference_eval.json" "$RESULTS/${m}_stages.json"; done
cp "$WORK/$NAME.json" "$RESULTS/$NAME.json"
echo "gpu_reference: done in $(( $(date +%s) - t0 )) s; results in $RESULTS"
