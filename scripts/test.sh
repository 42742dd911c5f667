#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs every test with CTest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
export OMP_PROC_BIND=${OMP_PROC_BIND:-false}
ctest --test-dir "$root/build/${DELAYOPT_PRESET:-default}" --output-on-failure -j "$(nproc)"
