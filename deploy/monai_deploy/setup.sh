#!/usr/bin/env bash
# The MONAI Deploy App SDK app's venv: deploy/monai_deploy/.venv (or $MONAI_DEPLOY_VENV), never the
# project's, because the SDK makes `import monai` import monai.deploy and holoscan.
#
# torch first, then the rest under a constraints file that pins torch, so nothing swaps in a CUDA
# build (see ../../../shared/TOOLCHAIN.md, "Clinical tools beside ours"). About 1.5 GB.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${MONAI_DEPLOY_VENV:-$here/.venv}"
python="${PYTHON:-python3}"

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import monai.deploy.core" 2>/dev/null; then
    echo "MONAI Deploy venv ready: $venv"
    exit 0
fi
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet torch==2.13.0
"$venv/bin/pip" install --quiet -c "$here/constraints.txt" -r "$here/requirements.txt"
"$venv/bin/python" -c "import monai.deploy.core, importlib.metadata as m; print(*(f'{p} {m.version(p)}' for p in ('monai-deploy-app-sdk', 'monai', 'torch', 'highdicom')))"
echo "MONAI Deploy venv ready: $venv"
