#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the delay-tolerance demo. Extra arguments go to
# the demo (try --help).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
export OMP_PROC_BIND=${OMP_PROC_BIND:-false} OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
exec "$root/build/${DELAYOPT_PRESET:-default}/examples/delayopt_demo" "$@"
