#!/usr/bin/env bash
# The GPU checks of docs/gpu.md in one go, for a machine with CUDA, a CUDA torch and the gpu extra installed
# (`make setup-gpu TORCH_SPEC=...`, or any Python where `import metarl, warp, mujoco_warp` works):
#
#   1. the `gpu`-marked tests (parity with the C MuJoCo backend on CUDA, the captured CUDA graph, every algorithm's
#      CLI on cuda, sampler statistics);
#   2. scripts/bench_sampler.py: env-steps/s of the warp backend on the GPU at 1k, 4k and 16k worlds, next to the CPU
#      backend in the same run;
#   3. scripts/bench_iteration.py on the GPU: one HalfCheetahVel MAML-TRPO iteration at the paper preset, and at 16×
#      the paper's batch.
#
# Each step has its own time limit and the next one runs whatever the last did, so one failure does not hide the
# rest. Logs and each benchmark's JSON line go to $OUT_DIR (default gpu-check/); the exit status is the number of
# steps that failed.
#
#   scripts/gpu_check.sh                         # everything: 2 min 45 s on an H200 with a cold kernel cache
#   PYTHON=python3 OUT_DIR=/tmp/out scripts/gpu_check.sh
set -u
PYTHON=${PYTHON:-python}
OUT_DIR=${OUT_DIR:-gpu-check}
TEST_WORKERS=${TEST_WORKERS:-6}      # pytest-xdist workers when it is installed: Warp compiles each model's kernels
                                     # once per cache, so parallel workers mostly overlap those first compiles
mkdir -p "$OUT_DIR"
failed=0

step() {  # step NAME SECONDS COMMAND...: run COMMAND with a limit, its output to the terminal and $OUT_DIR/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "=== $name ($(date +%T), limit ${limit}s): $*"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
}

"$PYTHON" - <<'EOF' 2>&1 | tee "$OUT_DIR/machine.log"
import os, torch, mujoco
print("torch", torch.__version__, "cuda", torch.version.cuda, "mujoco", mujoco.__version__, "cpus", os.cpu_count())
print("gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
import warp as wp, mujoco_warp
wp.init()
print("warp", wp.config.version, "devices", [str(d) for d in wp.get_devices()])
EOF

xdist=()
"$PYTHON" -c "import xdist" 2>/dev/null && xdist=(-n "$TEST_WORKERS")
# -W default: report warnings instead of failing on them (this machine's library versions are not the pinned ones)
step tests 170 "$PYTHON" -m pytest -q -m gpu -W default -p no:cacheprovider "${xdist[@]}" tests/test_warp.py
step sampler 130 "$PYTHON" scripts/bench_sampler.py --backend warp --device cuda --sweep 1024,4096,16384 \
    --episodes 16 --horizon 100 --repeats 3 --skip physics,sync,async
step iteration 80 "$PYTHON" scripts/bench_iteration.py --device cuda --skip-exact --iterations 2 --warmup 1
step iteration16 100 "$PYTHON" scripts/bench_iteration.py --device cuda --skip-exact --iterations 2 --warmup 1 \
    --batch-scale 16
for name in sampler iteration iteration16; do
    tail -n 1 "$OUT_DIR/$name.log" | grep '^{' > "$OUT_DIR/$name.json" || rm -f "$OUT_DIR/$name.json"
done
echo "=== $failed step(s) failed"
exit "$failed"
