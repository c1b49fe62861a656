#!/usr/bin/env bash
# Creates benchmarks/peer/.venv: this project (editable) plus PyTorch for the peer
# benchmark. torch is never a dependency of resnet_jax; it lives only here.
#
#   benchmarks/peer/setup.sh            # once, from anywhere (about 2 minutes)
#   benchmarks/peer/.venv/bin/python benchmarks/peer/compare.py --models=cifar20
#
# PYTHON=python3.11 picks the interpreter (>= 3.11).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -e "$repo"
# torchvision without its dependencies, so that it cannot replace this torch;
# its compiled ops do not load then, and torch_models.py declares the two that
# `import torchvision` needs (REFERENCE.md section 1). Where PyPI's default
# torch wheel is a CUDA build, add --index-url https://download.pytorch.org/whl/cpu
# to the torch line for the smaller CPU build: the benchmark is the same.
"$venv/bin/pip" install -q torch==2.13.0
"$venv/bin/pip" install -q --no-deps torchvision==0.28.0
# timm (reference implementations of the modern recipes' parts, and its weights'
# layouts), also without its dependencies, plus the three it needs to import.
"$venv/bin/pip" install -q --no-deps timm==1.0.31
"$venv/bin/pip" install -q pyyaml huggingface-hub safetensors==0.8.0
"$venv/bin/python" - "$here" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import torch_models  # Declares the torchvision ops its --no-deps install lacks.
torch_models.declare_torchvision_ops()
import jax, timm, torch, torchvision
print('peer venv ready: torch', torch.__version__, 'torchvision', torchvision.__version__,
      'timm', timm.__version__, 'jax', jax.__version__, 'threads', torch.get_num_threads())
EOF
echo "run: $venv/bin/python $here/compare.py --models=cifar20,cifar56 --dtypes=float32,bfloat16"
