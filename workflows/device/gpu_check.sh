#!/usr/bin/env bash
# The device checks of issue #27 as one command on a lent GPU machine, sized for its 15 minutes:
#   run(command="bash workflows/device/gpu_check.sh", carry=[".whl"], timeout_s=600)
# after `bash workflows/device/make_wheels.sh` here. Each step's output goes to $OUT (one file a
# step) and to the reply; a step that fails is said and the next one runs.
#   GPU_CHECK_TINY=1     every step with --tiny on the CPU (tests/test_device_kit.py runs it so here)
#   GPU_CHECK_STEPS      the steps to run (default: all): tests genome gpu-models batch-one decoders
#   GPU_CHECK_PYTHON     the Python (default python3, the device's)
#   GPU_CHECK_INSTALL=0  use the installed packages instead of the carried wheels
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)}
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
PY=${GPU_CHECK_PYTHON:-python3}
if [ "${GPU_CHECK_INSTALL:-1}" = 1 ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "error: installing the carried wheels failed"; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
STEPS=${GPU_CHECK_STEPS:-tests genome gpu-models batch-one decoders}
if [ "${GPU_CHECK_TINY:-0}" = 1 ]; then
    TINY=(--tiny); DEVICE=(--device cpu)
else
    TINY=(); DEVICE=()
fi
failed=0
step() {  # step NAME SECONDS COMMAND...: run it under a time limit, log to $OUT/NAME.txt
    local name=$1 limit=$2; shift 2
    echo "== $name ($(date +%T), limit ${limit}s): $*"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
    local code=${PIPESTATUS[0]}
    [ "$code" = 0 ] || { echo "== $name failed (exit $code)"; failed=1; }
}
"$PY" - <<'PYEOF' | tee "$OUT/device.txt"
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PYEOF
for s in $STEPS; do
    case $s in
        tests)  # the engine's agreement with its references, on the GPU where a test takes a device
            step tests 150 "$PY" -m pytest -q -x -p no:cacheprovider tests/test_devices.py tests/test_bench_genome_scale.py \
                tests/test_bench_gpu_models.py tests/test_sign_flag.py
            # the GPU half of the sign flag: a pinned copy and an event, the same answers
            step sign-flag 60 "$PY" -c "import torch; from lrp_domains.core.rules import SignFlag, ZBox
d = 'cuda' if torch.cuda.is_available() else 'cpu'
for v, want in (([0.0, 1.0], True), ([0.0, -1.0], False)):
    f = SignFlag(torch.tensor(v, device=d)); assert bool(f) is want and (f.event is not None) == (d == 'cuda')
    b = ZBox(0.0, 1.0).forward_flag(torch.tensor([v], device=d)); assert bool(b) is want and (b.event is not None) == (d == 'cuda')
print('sign and box flags ok on', d)" ;;
        batch-one)  # one example a call, where kernel launches show: the traced graph plan against the scope
            if [ ${#TINY[@]} = 1 ]; then
                step batch-one 150 "$PY" -m lrp_domains bench batch-one "${DEVICE[@]}" --cases mlp-module,residual-cnn --repeats 1
            else
                step batch-one 90 "$PY" -m lrp_domains bench batch-one --device cuda --cases mlp-module,residual-cnn,bpnet --repeats 20
            fi ;;
        genome)  # 33,000 of chr1's 330,000 windows, projected; deep_lift_shap on 64 of them
            if [ ${#TINY[@]} = 1 ]; then
                step genome 150 "$PY" -m lrp_domains bench genome-scale "${TINY[@]}" "${DEVICE[@]}"
            else
                step genome 300 "$PY" -m lrp_domains bench genome-scale --windows 33000 --sample 64
            fi ;;
        gpu-models)
            step gpu-models 150 "$PY" -m lrp_domains bench gpu-models "${TINY[@]}" "${DEVICE[@]}" \
                --models bpnet-profile,bpnet-counts,borzoi,nt ;;
        decoders)
            step decoders 150 "$PY" -m lrp_domains bench gpu "${TINY[@]}" "${DEVICE[@]}" --shapes 1b --no-defaults ;;
        *) echo "unknown step $s"; failed=1 ;;
    esac
done
exit $failed
