#!/bin/bash
# Issue 18's "every target prices every spec", end to end: a 3-class image folder (cat, dog, ship
# from ../shared/datasets/cifar10/train, 80 each, 32x32), a 2-class set at 3x96x96 and a 100-class
# set at 3x32x32 (both synthetic npz) each validate, run 3 trials and export on every shipped target.
# Usage: bash bench/every_target.sh [WORK_DIR]   (prints one rc line per step; any rc != 0 fails)
set -u
W=${1:-/tmp/every_target}; H=${HWSEARCH:-hwsearch}; PY=${PYTHON:-python}
export CIFAR_TRAIN=${CIFAR_TRAIN:-$(pwd)/../shared/datasets/cifar10/train}  # run from the repository root
mkdir -p "$W" && cd "$W" || exit 1
$PY - <<'PYEOF'
import shutil, numpy as np
from pathlib import Path
cifar = Path(__import__("os").environ["CIFAR_TRAIN"])
for c in ("cat", "dog", "ship"):
    out = Path("pets") / c
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted((cifar / c).iterdir())[:80]:
        shutil.copy(f, out / f.name)
rng = np.random.default_rng(0)
for name, n, classes, side in (("two96", 200, 2, 96), ("hundred", 1000, 100, 32)):
    y = np.arange(n) % classes
    x = (rng.integers(0, 255, (n, side, side, 3)) * 0.3 + (y[:, None, None, None] * 37 % 255) * 0.7).astype(np.uint8)
    np.savez(f"{name}.npz", x=x, y=y)
PYEOF
fail=0
for ds in "pets imagefolder pets 32" "two96 npz two96.npz 0" "hundred npz hundred.npz 0"; do
  set -- $ds; tag=$1; kind=$2; path=$3; size=$4
  for tgt in rpi4-a72 phone-a78 jetson-orin-nano mcu-m7 x86-epyc-1t; do
    spec=$tag-$tgt.yaml
    { echo "name: $tag-$tgt"; echo "dataset: {name: $kind, path: $path$( [ "$size" != 0 ] && echo ", image_size: $size")}"
      echo "target: $tgt"; echo "objectives: [accuracy, latency_ms, size_kb]"
      echo "space: {distill: false}"; echo "search: {trials: 3, epochs: 1, finetune_epochs: 0, batch_size: 64}"; } > "$spec"
    $H validate "$spec" --samples 20 > "$tag-$tgt.validate" 2>&1; a=$?
    $H run "$spec" --out "runs/$tag-$tgt" --no-progress > "$tag-$tgt.run" 2>&1; b=$?
    $H export "runs/$tag-$tgt" --pareto --out "export/$tag-$tgt" --no-progress > "$tag-$tgt.export" 2>&1; c=$?
    echo "$tag on $tgt: validate rc $a, run rc $b, export rc $c"
    [ $a$b$c = 000 ] || fail=1
  done
done
exit $fail
