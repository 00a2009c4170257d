#!/usr/bin/env bash
# nnU-Net v2, the peer of benchmarks/accuracy_hippocampus.py --peer nnunet, in its own venv
# (never in the project's): .venv-nnunet/ at the repository root, or $NNUNET_VENV.
#
# torch stays at the pinned CPU build through a constraints file: unconstrained, nnunetv2 pulls a
# CUDA torch and its torchvision (see ../../shared/TOOLCHAIN.md). The same file pins the libraries
# that do nnU-Net's work, so peer timings compare across sessions. About 6 minutes, 1.5 GB.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${NNUNET_VENV:-$repo/.venv-nnunet}"
python="${PYTHON:-python3}"

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import nnunetv2" 2>/dev/null; then
    echo "nnU-Net venv ready: $venv"
    exit 0
fi
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet torch==2.13.0
"$venv/bin/pip" install --quiet -c "$here/nnunet-constraints.txt" -r "$here/nnunet-requirements.txt"
"$venv/bin/python" -c "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer; import nnunetv2, importlib.metadata as m; print('nnunetv2', m.version('nnunetv2'), 'torch', m.version('torch'))"
echo "nnU-Net venv ready: $venv"
