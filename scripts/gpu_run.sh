#!/usr/bin/env bash
# The GPU run of issue 30, from the repo root on the lent machine (no network needed):
#   bash scripts/gpu_run.sh [scripts/gpu_figures.py flags...]
# 1. installs the carried wheels (gpu_wheels/, see .gitignore) into $S2R_SITE, without deps and
#    without an index, and puts it and the repo on PYTHONPATH (no editable install: that would
#    need setuptools' build isolation, i.e. the network);
# 2. prints python, pip list and GPU facts;
# 3. runs scripts/gpu_figures.py --out "$OUT" under `timeout` ($FIG_TIMEOUT seconds).
# Everything printed also goes to $OUT/run_log.txt.
# The wheels are not in git (27 MiB); on a machine with the package index, fill gpu_wheels/ with:
#   pip download --no-deps -d gpu_wheels mujoco==4.0.1 mujoco-mjx==3.17.0 brax==0.14.2 \
#     jaxopt==0.8.5 ml_collections==1.1.0 tensorboardX==2.6.5 trimesh==5.2.0 tqdm==4.67.1 \
#     safetensors==0.8.0
#   for v in 3.11 3.12; do pip download --no-deps --only-binary=:all: --python-version $v \
#     -d gpu_wheels mujoco-core==4.0.1; done
# then: run(command="bash scripts/gpu_run.sh", carry=["gpu_wheels"], timeout_s=560).
set -u
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-/tmp/s2r_gpu_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run_log.txt") 2>&1

PY=${PYTHON:-python3}
command -v "$PY" >/dev/null 2>&1 || PY=python
WHEELS=${WHEELS:-gpu_wheels}
SITE=${S2R_SITE:-/tmp/s2r_site}
# The run tool's limit for the whole command (timeout_s); gpu_figures.py gets what the install
# leaves of it: its own budget ends 20 s before, `timeout` 5 s before.
RUN_LIMIT=${RUN_LIMIT:-555}

echo "== $(date -u +%FT%TZ) $(uname -m) nproc=$(nproc) repo=$PWD"
echo "== $(command -v "$PY"): $("$PY" --version 2>&1); $("$PY" -m pip --version 2>&1)"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader \
  || echo "nvidia-smi failed"
echo "== pip list (selected)"
"$PY" -m pip list 2>/dev/null | grep -i -E '^(jax|jaxlib|jax-cuda|flax|optax|orbax|numpy|scipy|onnx|mujoco|brax|ml.collections|tensorboardx|trimesh|jaxopt|etils|absl|tqdm|safetensors|pyyaml|msgpack|chex|setuptools) '

# Which wheels: ours always (they shadow any device copy, so versions stay consistent);
# mujoco-core for this python only; tqdm and safetensors only where the device lacks them.
TAG=$("$PY" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
wheels=()
for w in "$WHEELS"/*.whl; do
  b=$(basename "$w")
  case "$b" in
    mujoco_core-*) [[ $b == *"-$TAG-"* ]] && wheels+=("$w") ;;
    tqdm-*) "$PY" -c 'import tqdm' 2>/dev/null || wheels+=("$w") ;;
    safetensors-*) "$PY" -c 'import safetensors' 2>/dev/null || wheels+=("$w") ;;
    *) wheels+=("$w") ;;
  esac
done
printf '%s\n' "${wheels[@]}" | grep -q mujoco_core || echo "!! no mujoco-core wheel for $TAG in $WHEELS"
echo "== installing ${#wheels[@]} wheels into $SITE"
rm -rf "$SITE"
if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
  "${wheels[@]}"; then
  echo "!! pip install of all wheels failed; trying one by one"
  for w in "${wheels[@]}"; do
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "$w" || echo "!! failed: $w"
  done
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
# The project's CPU flag (--xla_cpu_use_fusion_emitters) is unknown to jaxlib 0.11, which
# aborts on unknown XLA flags, and means nothing on a GPU; the GPU flag is Playground's and MJX's.
export S2R_NO_XLA_FLAGS=1
export XLA_FLAGS=${XLA_FLAGS:---xla_gpu_triton_gemm_any=true}
export S2R_JAX_CACHE_DIR=none  # a fresh machine: the persistent cache would only cost writes
export PYTHONUNBUFFERED=1
"$PY" - <<'EOF' 2>&1 | grep -v "Failed to import"
from importlib import metadata
for name in ("jax", "jaxlib", "mujoco", "mujoco-core", "mujoco-mjx", "brax", "flax", "optax",
             "orbax-checkpoint", "numpy", "ml-collections", "tensorboardX"):
    try:
        print(f"   {name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(f"   {name} MISSING")
import mujoco, mujoco.mjx, brax, playground  # noqa
print(f"== imports ok: mujoco {mujoco.__version__} from {mujoco.__file__}")
EOF
LEFT=$((RUN_LIMIT - SECONDS))
BUDGET=$((LEFT - 20))
((BUDGET > 510)) && BUDGET=510
echo "== gpu_figures.py at ${SECONDS}s: --total-budget $BUDGET, timeout $((LEFT - 5))s; $*"
timeout -k 5 $((LEFT - 5)) "$PY" scripts/gpu_figures.py --out "$OUT" --total-budget "$BUDGET" "$@"
echo "== gpu_figures rc=$? at $(date -u +%FT%TZ)"
ls -la "$OUT"
sleep 1  # let tee write the last lines
