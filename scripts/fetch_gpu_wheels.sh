#!/usr/bin/env bash
# Download, where PyPI is reachable, the wheels that scripts/gpu_check.py installs on a GPU machine that reaches no
# package index: what a GPU image with torch, transformers, peft and accelerate lacks (trl, omegaconf, moocore,
# datasets and their own needs beyond that image), for CPython 3.10-3.12 on manylinux x86_64, the newest versions
# within pyproject.toml's bounds. Fallbacks for an image with older packages: datasets < 5 (pyarrow >= 21 instead
# of >= 24, fsspec <= 2026.2.0) and, for CPython 3.12 only (the H200 image's Python), pyarrow itself, when the
# folder stays under the size limit. pip on the GPU machine picks what fits what is installed there.
#
#   bash scripts/fetch_gpu_wheels.sh [FOLDER]        # default: wheels/ (ignored by git), then carry it
#
# The device tool carries at most 64 MiB (the working tree included): the script fails above LIMIT_MIB.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-wheels}"
python="${PYTHON:-python3}"
limit_mib="${LIMIT_MIB:-56}"
mkdir -p "$dest"
platforms=(--only-binary=:all: --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
newest=("trl>=1.0,<2" "omegaconf>=2.3,<3" "moocore>=0.1.5" "datasets>=3.0,<6" "dill>=0.3.0,<0.4.2"
        "multiprocess<0.70.20" "cffi>=1.17.1" pycparser platformdirs "fsspec>=2023.1.0,<=2026.9.0")
fallback=("datasets>=3.0,<5" "fsspec>=2023.1.0,<=2026.2.0")
for version in 3.10 3.11 3.12; do
  # --no-deps: the rest of each package's needs (numpy, pandas, pyarrow, huggingface-hub, ...) is in the image.
  "$python" -m pip download --quiet --no-deps "${platforms[@]}" --python-version "$version" -d "$dest" "${newest[@]}"
  for requirement in "${fallback[@]}"; do
    "$python" -m pip download --quiet --no-deps "${platforms[@]}" --python-version "$version" -d "$dest" "$requirement"
  done
done
size_mib() { du -sm "$dest" | cut -f1; }
before=$(size_mib)
"$python" -m pip download --quiet --no-deps "${platforms[@]}" --python-version 3.12 -d "$dest" "pyarrow>=24"
if [ "$(size_mib)" -gt "$limit_mib" ]; then
  echo "pyarrow would take $dest to $(size_mib) MiB (limit $limit_mib): left out" >&2
  rm -f "$dest"/pyarrow-*.whl
fi
ls -l "$dest"
echo "$dest: $(size_mib) MiB in $(ls "$dest" | wc -l) wheels (was $before MiB before pyarrow)"
[ "$(size_mib)" -le "$limit_mib" ] || { echo "$dest is over $limit_mib MiB" >&2; exit 1; }
