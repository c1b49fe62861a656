#!/usr/bin/env bash
# The training-throughput matrix of benchmarks/RESULTS.md, for one GPU (H100/H200).
#
# On a machine that has ml_collections (this project's venv), once:
#   benchmarks/run_gpu.sh prepare     # copies ml_collections + PyYAML to benchmarks/.deps
# On the GPU machine, from the repository root, one group per call (each is a
# few minutes; most of it is XLA compiling ResNet-50). In priority order:
#   benchmarks/run_gpu.sh env         # versions, GPU; checks the import has no TensorFlow
#   benchmarks/run_gpu.sh rn50_bf16   # ResNet-50 224x224 bf16, batch 128/256/512 (target)
#   benchmarks/run_gpu.sh cifar       # CIFAR ResNet-20 batch 128; paper recipe 64k-step estimate (target)
#   benchmarks/run_gpu.sh flags_a     # ResNet-50 bf16 b256: latency-hiding scheduler, no Triton GEMM, autotune 0
#   benchmarks/run_gpu.sh flags_b     # ResNet-50 bf16 b256: forced NHWC convs, no command buffers
#   benchmarks/run_gpu.sh rn50_f32    # ResNet-50 float32 (TF32), batch 128/256
#   benchmarks/run_gpu.sh input       # host->device uint8 vs float32, prefetch, no donation
#   benchmarks/run_gpu.sh all         # everything above (longer than one 10-minute call)
#   benchmarks/run_gpu.sh table [FILE]  # the results as a Markdown table
#   benchmarks/run_gpu.sh smoke       # a few seconds on any machine: checks the plumbing
#
# Every run appends one JSON line (python -m resnet_jax.benchmark) to $RESULTS
# (default ${OUT:-benchmarks/gpu}/results.jsonl) as soon as it ends, so a call
# cut short keeps what finished; a run that fails (out of memory, an XLA flag
# this jaxlib does not know) appends an "error" line and the group goes on.
# stderr of each run goes to $LOGDIR.
#
# The GPU machine has jax but no TensorFlow and no ml_collections: the
# benchmark imports neither TensorFlow nor anything that needs it, and
# ml_collections (pure Python, plus PyYAML) travels in benchmarks/.deps.

set -u -o pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEST=${OUT:-benchmarks/gpu}
RESULTS=${RESULTS:-$DEST/results.jsonl}
LOGDIR=${LOGDIR:-$DEST/logs}
DEPS=benchmarks/.deps
# JAX preallocates 75 % of the GPU by default; ResNet-50 at batch 512 may need more.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}

R50='configs/fake_data.py:model=r50'
C20='configs/fake_data.py:model=cifar20'
# The paper's CIFAR recipe (SGD + weight decay, piecewise lr) on synthetic
# data, with the crop + flip augmentation inside the step (on_device_data),
# as a GPU run on data resident on the device would do it.
PAPER=(--config=configs/cifar10.py:recipe=paper --config.dataset=fake
       --config.image_size=32 --config.num_classes=10 --config.on_device_data=true)

# Candidate XLA flags, one at a time (name=flags).
CANDIDATES=(
  "lhs=--xla_gpu_enable_latency_hiding_scheduler=true"
  "no_triton_gemm=--xla_gpu_enable_triton_gemm=false"
  "autotune0=--xla_gpu_autotune_level=0"
  "conv_nhwc=--xla_gpu_force_conv_nhwc=true"
  "no_cmd_buffer=--xla_gpu_enable_command_buffer="
)

prepare() {
  # Pure-Python copies; PyYAML falls back to its Python implementation where
  # its C extension does not load.
  rm -rf "$DEPS" && mkdir -p "$DEPS"
  "$PYTHON" - "$DEPS" <<'EOF'
import os, shutil, sys
import ml_collections, yaml
for module in (ml_collections, yaml):
  src = os.path.dirname(module.__file__)
  shutil.copytree(src, os.path.join(sys.argv[1], os.path.basename(src)),
                  ignore=shutil.ignore_patterns('__pycache__', '*_test.py', 'examples'))
print('copied ml_collections', getattr(ml_collections, '__version__', '?'), 'and yaml', yaml.__version__, 'to', sys.argv[1])
EOF
  du -sh "$DEPS"
}

use_deps() {
  if ! "$PYTHON" -c 'import ml_collections' 2>/dev/null; then
    if [[ ! -d $DEPS ]]; then
      echo "ml_collections is missing: run 'benchmarks/run_gpu.sh prepare' where it is installed" >&2
      exit 1
    fi
    export PYTHONPATH="$PWD/$DEPS${PYTHONPATH:+:$PYTHONPATH}"
  fi
}

# bench TAG XLA_FLAGS ARGS...: one benchmark run, one JSON line in $RESULTS.
bench() {
  local tag=$1 xla=$2
  shift 2
  mkdir -p "$(dirname "$RESULTS")" "$LOGDIR"
  local log="$LOGDIR/$(date +%H%M%S)-$tag.log"
  echo "== $tag  XLA_FLAGS='$xla'  $*" >&2
  local line
  line=$(XLA_FLAGS="$xla" "$PYTHON" -m resnet_jax.benchmark "$@" 2>"$log" | tail -n 1)
  local rc=$?
  if [[ $rc -eq 0 && $line == \{* ]]; then
    # The tag names the matrix cell; the line already carries XLA_FLAGS.
    line="${line%\}}, \"tag\": \"$tag\"}"
    echo "$line" >>"$RESULTS"
    echo "$line" | "$PYTHON" -c 'import json,sys; r=json.load(sys.stdin); print("   %.1f img/s, %.2f ms/step, compile %.1f s, mfu %s" % (r["images_per_sec"], r["step_time_ms"], r["compile_s"], r["mfu"]))' >&2
  else
    local why
    why=$(grep -v '^\s*$' "$log" | tail -n 1 | tr '"\\' "''" | cut -c1-300)
    echo "{\"tag\": \"$tag\", \"xla_flags\": \"$xla\", \"error\": \"rc=$rc: $why\"}" >>"$RESULTS"
    echo "   FAILED (rc=$rc): $why" >&2
  fi
}

group_env() {
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv || true
  "$PYTHON" -c 'import jax, jaxlib, flax, optax; print("jax", jax.__version__, "jaxlib", jaxlib.__version__, "flax", flax.__version__, "optax", optax.__version__); print(jax.devices())'
  "$PYTHON" -c 'import ml_collections, sys; import resnet_jax.benchmark; assert "tensorflow" not in sys.modules; print("resnet_jax.benchmark imports without TensorFlow")'
}

group_cifar() {
  local common=(--steps=300 --warmup=20 --repeats=3 --estimate_steps=64000)
  bench c20_f32 '' --config=$C20 --config.dtype=float32 "${common[@]}"
  bench c20_bf16 '' --config=$C20 --config.dtype=bfloat16 "${common[@]}"
  bench paper_f32 '' "${PAPER[@]}" --config.dtype=float32 "${common[@]}"
  bench paper_bf16 '' "${PAPER[@]}" --config.dtype=bfloat16 "${common[@]}"
  # Tiny steps are launch-bound: what CUDA graphs (command buffers) are worth.
  bench paper_bf16_no_cmd_buffer '--xla_gpu_enable_command_buffer=' "${PAPER[@]}" \
    --config.dtype=bfloat16 "${common[@]}"
  # On XLA:CPU identity shortcuts make ResNet-110's backward 2.7x slower than 1x1
  # projections of the same FLOPs (RESULTS.md): does XLA:GPU do the same?
  local s
  for s in A C; do
    bench "c110_bf16_$s" '' --config=$C20 --config.model.depth=110 --config.model.shortcut=$s \
      --config.dtype=bfloat16 --steps=100 --warmup=10 --repeats=3
  done
}

R50_COMMON=(--config=$R50 --steps=20 --warmup=5 --repeats=3)

group_rn50_bf16() {
  local b
  for b in 128 256 512; do
    bench "r50_bf16_b$b" '' "${R50_COMMON[@]}" --config.dtype=bfloat16 --batch_size=$b
  done
}

group_rn50_f32() {
  local b
  for b in 128 256; do
    bench "r50_f32_b$b" '' "${R50_COMMON[@]}" --config.dtype=float32 --batch_size=$b
  done
}

# flags_candidates N...: ResNet-50 bf16 b256 under the CANDIDATES with these
# indices; compare with r50_bf16_b256 of rn50_bf16 (same machine and session).
flags_candidates() {
  local i c
  for i in "$@"; do
    c=${CANDIDATES[$i]}
    bench "r50_bf16_b256_${c%%=*}" "${c#*=}" "${R50_COMMON[@]}" \
      --config.dtype=bfloat16 --batch_size=256
  done
}

group_input() {
  local common=("${R50_COMMON[@]}" --config.dtype=bfloat16 --batch_size=256)
  bench r50_bf16_b256_h2d_uint8 '' "${common[@]}" --host_input=uint8
  bench r50_bf16_b256_h2d_uint8_prefetch2 '' "${common[@]}" --host_input=uint8 --prefetch=2
  bench r50_bf16_b256_h2d_float32 '' "${common[@]}" --host_input=float32
  bench r50_bf16_b256_h2d_float32_prefetch2 '' "${common[@]}" --host_input=float32 --prefetch=2
  bench r50_bf16_b256_nodonate '' "${common[@]}" --nodonate
}

group_smoke() {
  bench smoke '' --config=$C20 --config.model.depth=8 --config.image_size=16 \
    --batch_size=16 --steps=3 --warmup=1 --estimate_steps=64000
  bench smoke_bad_flag '--xla_no_such_flag=1' --config=$C20 --config.model.depth=8 \
    --config.image_size=16 --batch_size=16 --steps=3 --warmup=1
}

table() {
  "$PYTHON" - "${1:-$RESULTS}" <<'EOF'
import json, sys
cols = ('tag', 'device', 'dtype', 'batch_size', 'images_per_sec', 'step_time_ms',
        'compile_s', 'tflops_per_sec', 'mfu', 'peak_memory_gb', 'estimated_time_for_steps')
print('| ' + ' | '.join(cols) + ' |')
print('|' + '---|' * len(cols))
for line in open(sys.argv[1]):
  r = json.loads(line)
  if 'error' in r:
    print(f"| {r['tag']} | error: {r['error']} |")
    continue
  cells = []
  for c in cols:
    v = r.get(c)
    cells.append('' if v is None else f'{v:.4g}' if isinstance(v, float) else str(v))
  print('| ' + ' | '.join(cells) + ' |')
EOF
}

case "${1:-}" in
  prepare) prepare ;;
  env) use_deps; group_env ;;
  rn50_bf16) use_deps; group_rn50_bf16 ;;
  cifar) use_deps; group_cifar ;;
  flags_a) use_deps; flags_candidates 0 1 2 ;;
  flags_b) use_deps; flags_candidates 3 4 ;;
  rn50_f32) use_deps; group_rn50_f32 ;;
  input) use_deps; group_input ;;
  all) use_deps; group_env; group_rn50_bf16; group_cifar; flags_candidates 0 1 2 3 4
       group_rn50_f32; group_input ;;
  smoke) use_deps; group_smoke ;;
  table) table "${2:-}" ;;
  *) sed -n '2,23p' "$0"; exit 2 ;;
esac
