#!/usr/bin/env bash
# One GPU window, one command: the throughput matrix, then the paper's CIFAR
# ResNet-20 recipe on real data, all within a global deadline.
#
# Here (a machine with ml_collections and grain, e.g. this project's venv), once:
#   benchmarks/run_gpu.sh prepare          # ml_collections, PyYAML, grain -> benchmarks/.deps
# On the GPU machine (jax, no TensorFlow, ml_collections or grain), from the repository root:
#   benchmarks/run_gpu.sh all OUTDIR       # everything below, <= DEADLINE_S (540) s in all
#   benchmarks/run_gpu.sh env OUTDIR       # device and versions only
#   benchmarks/run_gpu.sh train OUTDIR     # only the CIFAR run (resumes OUTDIR/c20_paper)
#   benchmarks/run_gpu.sh pipeline OUTDIR  # only the host input pipeline
#   benchmarks/run_gpu.sh table OUTDIR     # OUTDIR/results.md from OUTDIR/results.jsonl
#   benchmarks/run_gpu.sh smoke OUTDIR     # seconds, any machine: a bench row and a bad-flag row
#
# `all`, in priority order; each stage starts only if the time it needs is left
# before the deadline (else a "skipped" row), and runs under `timeout` so that
# no stage can overrun it:
#   1. env: device, driver, versions (jax, jaxlib, flax, optax, orbax, numpy, PIL).
#   2. r50_bf16_b256, r50_bf16_b512: ResNet-50 224x224 bfloat16 train step
#      (images/s, MFU, compile time; python -m resnet_jax.benchmark).
#   3. paper_f32, paper_bf16: the CIFAR ResNet-20 paper recipe's step with
#      on-device augmentation, and its 64k-step estimate.
#   3b. pipeline: the host input pipeline on the machine's cores (ImageNet-style
#      training input, images/s by worker count, beside PyTorch's DataLoader +
#      torchvision where torch is installed; python -m resnet_jax.pipeline_benchmark).
#   4. train_c20_paper: the recipe itself on the CIFAR-10 JPEG copy ($CIFAR),
#      data on the devices (no TensorFlow there), in OUTDIR/c20_paper,
#      for as many of its 64,000 steps as the deadline allows: SIGTERM at the
#      end of its budget makes main save a checkpoint and exit 75; the next
#      window's `all` (with OUTDIR carried back) resumes it. Skipped once done.
#   5. XLA flag candidates, one at a time, while time is left (each needs the
#      wall time its baseline took).
# Every result is one JSON line in OUTDIR/results.jsonl (appended as soon as
# it ends, so a cut-short call keeps what finished) and the Markdown table
# OUTDIR/results.md (rewritten after each stage); stderr of each run goes to
# OUTDIR/logs/. A run that fails (out of memory, an XLA flag this jaxlib does
# not know) gives an "error" row and the next stage runs.
#
# Environment: DEADLINE_S (540), PYTHON (python3), CIFAR (../shared/data/
# cifar10-jpeg-q75.tar.gz), TRAIN_WORKDIR (OUTDIR/c20_paper), DATA_DIR (the
# folder index, outside OUTDIR: $TMPDIR/resnet_jax_data), PREPARE_PYTHONS
# (the other Python versions whose grain wheel `prepare` fetches: 3.10 3.12 3.13),
# JAX_COMPILATION_CACHE_DIR ($TMPDIR/resnet_jax_jax_cache), DEPS
# (benchmarks/.deps), TRAIN_MAX_S and MAX_CANDIDATES (caps on the training
# seconds and on the flag candidates), DRY_RUN=1 (tiny models and steps,
# seconds-scale minimums: the CPU rehearsal that tests/test_run_gpu.py runs).

set -u -o pipefail

cd "$(dirname "$0")/.."
START=$SECONDS
PYTHON=${PYTHON:-python3}
DEPS=${DEPS:-benchmarks/.deps}
DEADLINE_S=${DEADLINE_S:-540}
CIFAR=${CIFAR:-../shared/data/cifar10-jpeg-q75.tar.gz}
SCRATCH=${TMPDIR:-/tmp}
DATA_DIR=${DATA_DIR:-$SCRATCH/resnet_jax_data}
DRY_RUN=${DRY_RUN:-0}
# At most this many seconds of training per call (default: all that is left),
# and at most this many XLA flag candidates.
TRAIN_MAX_S=${TRAIN_MAX_S:-100000}
MAX_CANDIDATES=${MAX_CANDIDATES:-100}
# JAX preallocates 75 % of the GPU by default; ResNet-50 at batch 512 may need more.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
# A train step compiled by one stage is loaded, not compiled, by a later one
# with the same program (the paper benchmark and the CIFAR run may share it).
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$SCRATCH/resnet_jax_jax_cache}

PAPER=(--config=configs/cifar10.py:recipe=paper)
# The recipe's step on synthetic data, with the crop + flip inside the step
# (data on the devices), as the real run below does it.
PAPER_FAKE=("${PAPER[@]}" --config.dataset=fake --config.image_size=32
            --config.num_classes=10 --config.placement=device)
TRAIN_ARGS=("${PAPER[@]}" "--config.dataset=folder:$CIFAR" --config.placement=device
            "--config.data_dir=$DATA_DIR" --config.download=False)
if [[ $DRY_RUN == 1 ]]; then
  # Same stages, tiny sizes: CIFAR ResNet-8 at 16x16 stands in for ResNet-50.
  R50=(--config=configs/fake_data.py:model=cifar20 --config.model.depth=8 --config.image_size=16)
  R50_BATCHES=(16 32)
  R50_STEPS=(--steps=2 --warmup=1 --repeats=2)
  PAPER_FAKE+=(--config.model.depth=8 --batch_size=16)
  PAPER_STEPS=(--steps=3 --warmup=1 --repeats=2 --estimate_steps=64000)
  TRAIN_ARGS+=(--config.model.depth=8 --config.batch_size=16 --config.train_split=train
               --config.log_every_steps=10 --config.eval_every_steps=40
               --config.checkpoint_every_steps=40)
  PIPELINE_ARGS=(--only=imagenet_train --workers=1 --imagenet_images=16 --images=16
                 --batch_size=8 --warmup_batches=1 --rounds=1)
  NEED_R50=6 NEED_PAPER=5 NEED_PIPELINE=8 NEED_TRAIN=25 RESERVE=4 STOP_GRACE=10
else
  R50=(--config=configs/fake_data.py:model=r50)
  R50_BATCHES=(256 512)
  R50_STEPS=(--steps=20 --warmup=5 --repeats=3)
  PAPER_STEPS=(--steps=300 --warmup=20 --repeats=3 --estimate_steps=64000)
  # ImageNet-style training input on the host's cores: half of them, all but
  # two (the training process's), all.
  CORES=$(nproc)
  PIPELINE_ARGS=(--only=imagenet_train "--workers=$((CORES / 2)),$((CORES > 2 ? CORES - 2 : 1)),$CORES"
                 --images=6400 --rounds=1)
  # Minimum seconds to start a stage (ResNet-50's compile alone is ~1 min),
  # seconds kept back at the end, seconds a stopped run has to save and exit.
  NEED_R50=90 NEED_PAPER=45 NEED_PIPELINE=60 NEED_TRAIN=75 RESERVE=15 STOP_GRACE=20
fi

# Candidate XLA flags, one at a time (name=flags), on ResNet-50 bf16 b256
# (the paper step's command-buffer run is the cheapest, so it goes first).
CANDIDATES=(
  "lhs=--xla_gpu_enable_latency_hiding_scheduler=true"
  "no_triton_gemm=--xla_gpu_enable_triton_gemm=false"
  "autotune0=--xla_gpu_autotune_level=0"
  "conv_nhwc=--xla_gpu_force_conv_nhwc=true"
  "no_cmd_buffer=--xla_gpu_enable_command_buffer="
)

usage() { sed -n '2,13p' "$0"; exit 2; }

left() { echo $((DEADLINE_S - (SECONDS - START))); }

# limit: seconds a command may still run (at least 1: `timeout 0` means none).
limit() {
  local s=$(($(left) - RESERVE))
  echo $((s < 1 ? 1 : s))
}

prepare() {
  # common/: pure-Python copies of ml_collections, PyYAML (its Python
  # fallback loads where its C extension does not), cloudpickle and portpicker,
  # and a stand-in for array_record (grain imports it for a data source the GPU
  # run never uses; the real one is 11 MiB of compiled code per Python).
  # pyXY/: grain, which has compiled parts: this Python's copy, and wheels for
  # PREPARE_PYTHONS fetched from PyPI (a failed fetch only warns).
  rm -rf "$DEPS" && mkdir -p "$DEPS/common"
  "$PYTHON" - "$DEPS" <<'EOF'
import os, shutil, sys
import cloudpickle, grain, ml_collections, portpicker, yaml
deps = sys.argv[1]
skip = shutil.ignore_patterns('__pycache__', '*_test.py', 'examples', 'testdata')
for module in (ml_collections, yaml, cloudpickle):
  src = os.path.dirname(module.__file__)
  shutil.copytree(src, os.path.join(deps, 'common', os.path.basename(src)), ignore=skip)
shutil.copy(portpicker.__file__, os.path.join(deps, 'common'))
stub = os.path.join(deps, 'common', 'array_record', 'python')
os.makedirs(stub)
for d in (os.path.dirname(stub), stub):
  open(os.path.join(d, '__init__.py'), 'w').close()
with open(os.path.join(stub, 'array_record_data_source.py'), 'w') as f:
  f.write('"""Stand-in: array_record is not installed on this machine."""\n'
          'from typing import Any\nPathLikeOrFileInstruction = Any\n\n\n'
          'class ArrayRecordDataSource:\n\n  def __init__(self, *args, **kwargs):\n'
          '    raise ImportError("array_record is not installed")\n')
version = f'py{sys.version_info[0]}{sys.version_info[1]}'
shutil.copytree(os.path.dirname(grain.__file__), os.path.join(deps, version, 'grain'),
                ignore=skip)
print('copied ml_collections', getattr(ml_collections, '__version__', '?'), 'yaml',
      yaml.__version__, 'cloudpickle', cloudpickle.__version__, 'portpicker, and grain',
      grain.__version__, f'({version}) to', deps)
EOF
  [[ $? -eq 0 ]] || { echo "prepare needs ml_collections, PyYAML and grain installed for $PYTHON" >&2; exit 1; }
  local v wheels grain_version
  grain_version=$("$PYTHON" -c 'import grain; print(grain.__version__)')
  for v in ${PREPARE_PYTHONS-3.10 3.12 3.13}; do
    [[ -d $DEPS/py${v/./} ]] && continue
    wheels=$(mktemp -d)
    if "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$v" \
         --platform manylinux_2_28_x86_64 -d "$wheels" "grain==$grain_version" 2>/dev/null; then
      "$PYTHON" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
        "$(ls "$wheels"/*.whl)" "$DEPS/py${v/./}"
      rm -rf "$DEPS/py${v/./}"/*.dist-info
      find "$DEPS/py${v/./}" -name '*_test.py' -delete
      echo "fetched grain $grain_version for Python $v" >&2
    else
      echo "warning: no grain $grain_version wheel for Python $v (offline?)" >&2
    fi
    rm -rf "$wheels"
  done
  # What a GPU call carries: the working tree git would commit, the deps, the data.
  local code deps data
  code=$(git ls-files -co --exclude-standard -z | xargs -0 cat 2>/dev/null | wc -c)
  deps=$(find "$DEPS" -type f -print0 | xargs -0 cat | wc -c)
  data=$( [[ -f $CIFAR ]] && wc -c <"$CIFAR" || echo 0)
  echo "travels: code $((code / 1024)) KiB + deps $((deps / 1024)) KiB + CIFAR copy" \
       "$((data / 1024)) KiB = $(((code + deps + data) / 1048576)) MiB of 64 MiB"
}

use_deps() {
  local module dir version
  version=$("$PYTHON" -c 'import sys; print("py%d%d" % sys.version_info[:2])')
  for module in ml_collections grain; do
    "$PYTHON" -c "import $module" 2>/dev/null && continue
    dir=$DEPS/common
    [[ $module == grain ]] && dir=$DEPS/$version
    if [[ ! -d $dir ]]; then
      echo "$module is missing and $dir holds no copy for this Python ($version): run" \
           "'benchmarks/run_gpu.sh prepare' where it is installed" >&2
      exit 1
    fi
    case ":${PYTHONPATH:-}:" in *":$(cd "$dir" && pwd):"*) ;; *)
      export PYTHONPATH="$(cd "$dir" && pwd)${PYTHONPATH:+:$PYTHONPATH}" ;; esac
    [[ $module == grain ]] && case ":$PYTHONPATH:" in *":$(cd "$DEPS/common" && pwd):"*) ;; *)
      export PYTHONPATH="$PYTHONPATH:$(cd "$DEPS/common" && pwd)" ;; esac
  done
}

# record JSON: appends one line to the results and rewrites the table.
record() {
  echo "$1" >>"$RESULTS"
  table "$OUT" >"$OUT/results.md.tmp" 2>/dev/null && mv "$OUT/results.md.tmp" "$OUT/results.md"
}

skip() {  # skip TAG WHY
  echo "   skipped $1: $2" >&2
  record "{\"tag\": \"$1\", \"skipped\": \"$2\"}"
}

# need TAG SECONDS: true if SECONDS (plus the reserve) are left, else a skipped row.
need() {
  if (( $(left) < $2 + RESERVE )); then
    skip "$1" "$(left) s left before the ${DEADLINE_S} s deadline, $2 s needed"
    return 1
  fi
}

# bench TAG XLA_FLAGS ARGS...: one benchmark run, one JSON line.
bench() {
  local tag=$1 xla=$2
  shift 2
  local log="$OUT/logs/$tag.log" line rc begin=$SECONDS
  echo "== $tag  XLA_FLAGS='$xla'  $*" >&2
  line=$(XLA_FLAGS="$xla" timeout -k 10 "$(limit)" \
         "$PYTHON" -m resnet_jax.benchmark "$@" 2>"$log" | tail -n 1)
  rc=$?
  WALL[$tag]=$((SECONDS - begin))
  if [[ $rc -eq 0 && $line == \{* ]]; then
    OK[$tag]=1
    # The tag names the matrix cell; the line already carries XLA_FLAGS.
    record "${line%\}}, \"tag\": \"$tag\", \"wall_s\": ${WALL[$tag]}}"
    echo "$line" | "$PYTHON" -c 'import json,sys; r=json.load(sys.stdin); print("   %.1f img/s, %.3f ms/step, compile %.1f s, mfu %s" % (r["images_per_sec"], r["step_time_ms"], r["compile_s"], r["mfu"]))' >&2
  else
    local why
    why=$(grep -v '^\s*$' "$log" | tail -n 1 | tr '"\\\t' "'' " | cut -c1-300)
    [[ $rc -eq 124 || $rc -eq 137 ]] && why="stopped at the deadline (rc=$rc): $why"
    record "{\"tag\": \"$tag\", \"xla_flags\": \"$xla\", \"error\": \"rc=$rc: $why\", \"wall_s\": ${WALL[$tag]}}"
    echo "   FAILED (rc=$rc): $why" >&2
  fi
}

stage_env() {
  timeout -k 10 "$(limit)" "$PYTHON" - >"$OUT/env.json" 2>"$OUT/logs/env.log" <<'EOF'
import datetime, importlib, json, os, platform, subprocess, sys
info = {'tag': 'env', 'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'python': platform.python_version(), 'host_cpus': os.cpu_count()}
try:
  info['nvidia_smi'] = subprocess.run(
      ['nvidia-smi', '--query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit',
       '--format=csv,noheader'], capture_output=True, text=True, timeout=30).stdout.strip()
except (OSError, subprocess.SubprocessError) as e:
  info['nvidia_smi'] = f'unavailable: {e}'
for name in ('jax', 'jaxlib', 'flax', 'optax', 'orbax.checkpoint', 'numpy', 'PIL', 'ml_collections',
             'grain'):
  try:
    info[name.split('.')[0] + '_version'] = getattr(importlib.import_module(name), '__version__', '?')
  except ImportError:
    info[name.split('.')[0] + '_version'] = None
import jax
devices = jax.devices()
info.update(device=devices[0].device_kind, platform=devices[0].platform, num_devices=len(devices))
import resnet_jax.benchmark, resnet_jax.data.folder, grain  # What the GPU run imports.
info['tensorflow_imported'] = 'tensorflow' in sys.modules
try:
  import tensorflow  # noqa: F401
  info['tensorflow_installed'] = True
except ImportError:
  info['tensorflow_installed'] = False
print(json.dumps(info))
EOF
  local rc=$?
  if [[ $rc -eq 0 ]]; then
    record "$(cat "$OUT/env.json")"
    cat "$OUT/env.json" >&2
  else
    record "{\"tag\": \"env\", \"error\": \"rc=$rc: $(tail -n 1 "$OUT/logs/env.log" | tr '"\\' "''" | cut -c1-300)\"}"
  fi
}

stage_r50() {
  local b
  for b in "${R50_BATCHES[@]}"; do
    need "r50_bf16_b$b" "$NEED_R50" || return 0
    bench "r50_bf16_b$b" '' "${R50[@]}" "${R50_STEPS[@]}" --config.dtype=bfloat16 --batch_size="$b"
  done
}

stage_paper() {
  local dtype
  for dtype in float32 bfloat16; do
    need "paper_${dtype/float/f}" "$NEED_PAPER" || return 0
    bench "paper_${dtype/float/f}" '' "${PAPER_FAKE[@]}" "${PAPER_STEPS[@]}" --config.dtype=$dtype
  done
}

# The host pipeline on this machine's cores, beside PyTorch's where it is installed.
stage_pipeline() {
  local tag=pipeline log="$OUT/logs/pipeline.log" peer=() begin=$SECONDS rc
  need $tag "$NEED_PIPELINE" || return 0
  "$PYTHON" -c 'import torch, torchvision' 2>/dev/null && peer=("--peer_python=$PYTHON")
  echo "== $tag: ${PIPELINE_ARGS[*]} ${peer[*]}" >&2
  timeout -k 10 "$(limit)" "$PYTHON" -m resnet_jax.pipeline_benchmark "${PIPELINE_ARGS[@]}" \
    "${peer[@]}" >"$OUT/logs/pipeline.jsonl" 2>"$log"
  rc=$?
  if [[ $rc -eq 0 ]]; then
    "$PYTHON" - "$OUT/logs/pipeline.jsonl" "$((SECONDS - begin))" >>"$RESULTS" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
host = next(r for r in rows if r['benchmark'] == 'host')
for r in rows:
  if r.get('summary'):
    print(json.dumps({'tag': f"pipeline_{r['benchmark']}_{r['variant'].replace('/', '_w')}",
                      'images_per_sec': r['images_per_sec'],
                      'images_per_sec_per_core': r['images_per_sec_per_core'],
                      'cores': host['cpu_count'], 'wall_s': int(sys.argv[2])}))
EOF
    table "$OUT" >"$OUT/results.md.tmp" 2>/dev/null && mv "$OUT/results.md.tmp" "$OUT/results.md"
    grep '"summary"' "$OUT/logs/pipeline.jsonl" >&2
  else
    record "{\"tag\": \"$tag\", \"error\": \"rc=$rc: $(grep -v '^\s*$' "$log" | tail -n 1 | tr '"\\' "''" | cut -c1-300)\", \"wall_s\": $((SECONDS - begin))}"
  fi
}

# last_checkpoint WORKDIR: the newest checkpoint's step (0 if none).
last_checkpoint() {
  { ls "$1/checkpoints" 2>/dev/null | grep -E '^[0-9]+$'; echo 0; } | sort -n | tail -n 1
}

# The recipe on real data until it ends or its budget does, then a summary row.
stage_train() {
  local tag=train_c20_paper workdir=${TRAIN_WORKDIR:-$OUT/c20_paper}
  if [[ ! -f $CIFAR ]]; then
    skip $tag "no CIFAR-10 copy at $CIFAR (set CIFAR=PATH)"
    return 0
  fi
  if [[ -f $workdir/finished ]]; then
    skip $tag "already finished in an earlier window (see $workdir)"
    return 0
  fi
  need $tag "$NEED_TRAIN" || return 0
  local budget=$(($(left) - RESERVE - STOP_GRACE)) before=0 start rc begin=$SECONDS
  (( budget > TRAIN_MAX_S )) && budget=$TRAIN_MAX_S
  (( budget < 1 )) && budget=1
  [[ -f $workdir/metrics.jsonl ]] && before=$(wc -l <"$workdir/metrics.jsonl")
  start=$(last_checkpoint "$workdir")
  echo "== $tag: ${budget} s, then SIGTERM (checkpoint, exit 75)  $workdir" >&2
  timeout --preserve-status -s TERM -k "$STOP_GRACE" "$budget" \
    "$PYTHON" -m resnet_jax.main "${TRAIN_ARGS[@]}" --workdir="$workdir" \
    >"$OUT/logs/$tag.out" 2>"$OUT/logs/$tag.log"
  rc=$?
  [[ $rc -eq 0 ]] && touch "$workdir/finished"
  record "$("$PYTHON" - "$workdir" "$before" "$rc" "$((SECONDS - begin))" "$budget" \
            "$OUT/logs/$tag.log" "$start" "$(last_checkpoint "$workdir")" <<'EOF'
import datetime, json, statistics, sys
workdir, log = sys.argv[1], sys.argv[6]
before, rc, wall, budget, start, end = map(int, sys.argv[2:6] + sys.argv[7:9])
row = {'tag': 'train_c20_paper', 'rc': rc, 'wall_s': wall, 'budget_s': budget, 'workdir': workdir,
       'status': {0: 'finished', 75: 'stopped at the deadline, checkpoint saved (resumes)'}.get(
           rc, 'failed'),
       'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
try:
  with open(f'{workdir}/metrics.jsonl') as f:
    rows = [json.loads(l) for l in f if l.strip()]
except OSError:
  rows = []
new = rows[before:]
train = [r for r in new if 'train_loss' in r]
evals = [r for r in rows if 'eval_top1' in r]
# Checkpoint steps: where this call resumed and where the next one will.
row['start_step'], row['end_step'] = start, end
row['num_train_steps'] = 64000
timed = [r for r in train if 'step_time_ms' in r]
if timed:
  row['step_time_ms'] = statistics.median(r['step_time_ms'] for r in timed)
  row['images_per_sec'] = statistics.median(r['images_per_sec'] for r in timed)
  row['estimated_s_to_finish'] = round((64000 - row['end_step']) * row['step_time_ms'] / 1000, 1)
if train:
  row['train_loss'] = train[-1]['train_loss']
if evals:
  row.update(eval_step=evals[-1]['step'], eval_top1=evals[-1]['eval_top1'])
if row['status'] == 'failed':
  try:
    lines = [l.strip() for l in open(log, errors='replace') if l.strip()]
    row['error'] = f'rc={rc}: ' + (lines[-1][:300] if lines else '')
  except OSError:
    pass
print(json.dumps(row))
EOF
)"
  tail -n 1 "$RESULTS" >&2
}

stage_flags() {
  local c name flags n=0
  if [[ -n ${OK[paper_bf16]:-} ]] && (( n++ < MAX_CANDIDATES )); then
    need paper_bf16_no_cmd_buffer "${WALL[paper_bf16]}" &&
      bench paper_bf16_no_cmd_buffer '--xla_gpu_enable_command_buffer=' "${PAPER_FAKE[@]}" \
        "${PAPER_STEPS[@]}" --config.dtype=bfloat16
  fi
  local base=r50_bf16_b${R50_BATCHES[0]}
  [[ -n ${OK[$base]:-} ]] || return 0
  for c in "${CANDIDATES[@]}"; do
    (( n++ < MAX_CANDIDATES )) || return 0
    name=${c%%=*} flags=${c#*=}
    need "${base}_$name" "${WALL[$base]}" || return 0
    bench "${base}_$name" "$flags" "${R50[@]}" "${R50_STEPS[@]}" --config.dtype=bfloat16 \
      --batch_size="${R50_BATCHES[0]}"
  done
}

stage_smoke() {
  bench smoke '' --config=configs/fake_data.py:model=cifar20 --config.model.depth=8 \
    --config.image_size=16 --batch_size=16 --steps=3 --warmup=1 --estimate_steps=64000
  bench smoke_bad_flag '--xla_no_such_flag=1' --config=configs/fake_data.py:model=cifar20 \
    --config.model.depth=8 --config.image_size=16 --batch_size=16 --steps=3 --warmup=1
}

# table OUTDIR: the Markdown view of OUTDIR/results.jsonl.
table() {
  "$PYTHON" - "$1/results.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def cell(v):
  return '' if v is None else f'{v:.4g}' if isinstance(v, float) else str(v)
for r in rows:
  if r.get('tag') == 'env' and 'error' not in r:
    print(f"Device: {r.get('device')} x{r.get('num_devices')} ({r.get('nvidia_smi')}); "
          f"jax {r.get('jax_version')}, jaxlib {r.get('jaxlib_version')}, flax {r.get('flax_version')}, "
          f"optax {r.get('optax_version')}, orbax {r.get('orbax_version')}, Python {r.get('python')}; "
          f"{r.get('date')}; TensorFlow installed: {r.get('tensorflow_installed')}.\n")
pipeline = [r for r in rows if r.get('tag', '').startswith('pipeline')]
rows = [r for r in rows if r not in pipeline]
cols = ('tag', 'dtype', 'batch_size', 'images_per_sec', 'step_time_ms', 'compile_s',
        'tflops_per_sec', 'mfu', 'peak_memory_gb', 'estimated_time_for_steps', 'wall_s', 'xla_flags')
print('| ' + ' | '.join(cols) + ' |')
print('|' + '---|' * len(cols))
for r in rows:
  if r.get('tag') == 'env' or r.get('tag', '').startswith('train'):
    continue
  if 'error' in r or 'skipped' in r:
    print(f"| {r['tag']} | {'error: ' + r['error'] if 'error' in r else 'skipped: ' + r['skipped']} |")
    continue
  print('| ' + ' | '.join(cell(r.get(c)) for c in cols) + ' |')
if pipeline:
  cols = ('tag', 'images_per_sec', 'images_per_sec_per_core', 'cores', 'wall_s')
  print('\n| ' + ' | '.join(cols) + ' |')
  print('|' + '---|' * len(cols))
  for r in pipeline:
    print(f"| {r['tag']} | error: {r['error']} |" if 'error' in r else
          '| ' + ' | '.join(cell(r.get(c)) for c in cols) + ' |')
train = [r for r in rows if r.get('tag', '').startswith('train')]
if train:
  cols = ('tag', 'status', 'start_step', 'end_step', 'num_train_steps', 'step_time_ms',
          'images_per_sec', 'estimated_s_to_finish', 'eval_step', 'eval_top1', 'train_loss', 'wall_s')
  print('\n| ' + ' | '.join(cols) + ' |')
  print('|' + '---|' * len(cols))
  for r in train:
    if 'skipped' in r:
      print(f"| {r['tag']} | skipped: {r['skipped']} |")
    else:
      print('| ' + ' | '.join(cell(r.get(c)) for c in cols) + ' |')
EOF
}

cmd=${1:-}
case $cmd in
  prepare) prepare; exit 0 ;;
  table) [[ -n ${2:-} ]] || usage; table "$2"; exit 0 ;;
  all|env|train|pipeline|smoke) [[ -n ${2:-} ]] || usage ;;
  *) usage ;;
esac
OUT=$2
RESULTS=$OUT/results.jsonl
mkdir -p "$OUT/logs"
declare -A WALL OK  # Wall seconds of each bench; the ones that succeeded.
use_deps
echo "== $cmd: ${DEADLINE_S} s deadline, results in $OUT" >&2
case $cmd in
  env) stage_env ;;
  train) stage_train ;;
  pipeline) stage_pipeline ;;
  smoke) stage_smoke ;;
  all) stage_env; stage_r50; stage_paper; stage_pipeline; stage_train; stage_flags ;;
esac
echo "== done in $((SECONDS - START)) s; $OUT/results.md" >&2
