#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the main job: the delay-tolerance demo on a real
# asynchronous 1F1B pipeline (P = 1 vs P = 8; Adam, PipeDream-LR, Nesterov, basis rotation and
# basis rotation + Nesterov), with a table and a loss plot in ./pipeline_demo/. Extra arguments go
# to the demo (try --help). The single-block delay sweep is build/default/examples/delayopt_demo.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
export OMP_PROC_BIND=${OMP_PROC_BIND:-false} OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
exec "$root/build/${DELAYOPT_PRESET:-default}/examples/async_pipeline/delayopt_pipeline_demo" "$@"
