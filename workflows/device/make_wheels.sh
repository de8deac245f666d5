#!/usr/bin/env bash
# The wheels a lent GPU machine lacks, into .whl/ (in .gitignore), for workflows/device/gpu_check.sh.
#
# The device image has Python 3.12 with torch, transformers, pandas, pyarrow, typer, rich, tqdm,
# safetensors, einops, numba, h5py and scipy, and no network. What the GPU benches need beside
# those travels as wheels (about 5 MB): bpnet-lite, tangermeme, pyfaidx, pyBigWig, borzoi-pytorch,
# intervaltree, and this project's own wheel (its entry points register the run kinds). Enformer is
# left out: enformer-pytorch imports polars, whose runtime wheel (50 MB) would not fit the 64 MiB a
# call carries. Run here, in the repository root: bash workflows/device/make_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .whl && mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 any; do
    platforms+=(--platform "$p")
done
PIP=${PIP:-python3 -m pip}
$PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" -d .whl \
    bpnet-lite==1.1.0 tangermeme==1.6.0 pyfaidx==0.9.2.2 pyBigWig==0.3.29 borzoi-pytorch==0.5.1 intervaltree==3.2.1
$PIP wheel -q --no-deps -w .whl .
ls .whl
du -sh .whl
