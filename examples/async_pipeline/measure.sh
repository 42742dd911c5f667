#!/usr/bin/env bash
# Reproduces the measurements in docs/pipeline.md and prints them as Markdown tables.
#
#   examples/async_pipeline/measure.sh BUILD_DIR throughput [TRANSPORTS] [REPEATS]
#   examples/async_pipeline/measure.sh BUILD_DIR convergence [SEEDS] [METHODS] [CONFIGS]
#
# throughput: microbatches/s of asynchronous 1F1B vs synchronous GPipe (M = P and M = 4P
#   microbatches per update) at P = 4 and 8 on each transport (default "threads mpi"), for the
#   default network (8 blocks of 64, batch 32) and a wider one (256); median of REPEATS runs (3).
#   Every run processes the same number of microbatches.
# convergence: iterations to the target loss on digits for P = 1, 2, 4, 8 with and without weight
#   stashing, per method (each at its default learning rate); median over SEEDS (default "1 2 3").
#   METHODS (default "adam pipedream-lr rot-cov-bi rot-cov-bi+pipedream-lr") and CONFIGS (P:extra
#   driver arguments, default "1: 2: 4: 8: 2:--no-stashing 4:--no-stashing 8:--no-stashing"; the
#   first is the baseline of the slowdowns) choose other rows and columns.
set -euo pipefail

build=${1:?usage: measure.sh BUILD_DIR throughput|convergence [...]}
what=${2:?usage: measure.sh BUILD_DIR throughput|convergence [...]}
bin=$build/examples/async_pipeline/delayopt_pipeline
[ -x "$bin" ] || { echo "measure.sh: $bin not found; build the project first" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMP_PROC_BIND=false
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi

# Extra driver arguments for every run, e.g. PIPELINE_EXTRA_ARGS="--data-path /path/digits.csv.gz".
read -r -a extra_args <<<"${PIPELINE_EXTRA_ARGS:-}"

# field FILE KEY: one top-level scalar of the driver's JSON ("-" for null); no python needed
field() {
  sed -n "s/^ *\"$2\": *\([^,]*\),\{0,1\}$/\1/p" "$1" | head -n1 | sed 's/^null$/-/'
}

# run TRANSPORT P ARGS...: runs the driver, leaves the record in $tmp/run.json
run() {
  local transport=$1 P=$2
  shift 2
  if [ "$transport" = mpi ]; then
    mpirun -np "$P" --oversubscribe --bind-to none -x OMP_PROC_BIND \
      "$bin" --transport mpi --stages "$P" "$@" "${extra_args[@]}" --json "$tmp/run.json" >/dev/null
  else
    "$bin" --transport threads --stages "$P" "$@" "${extra_args[@]}" --json "$tmp/run.json" >/dev/null
  fi
}

# median N CMD...: median of N runs of CMD's microbatches/s
median() {
  local n=$1
  shift
  for ((r = 0; r < n; ++r)); do
    "$@"
    field "$tmp/run.json" microbatches_per_sec
  done | sort -g | awk '{v[NR] = $1} END {printf "%.0f", v[int((NR + 1) / 2)]}'
}

throughput() {
  local transports=${1:-threads mpi} repeats=${2:-3}
  echo "CPU: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo "| network | transport | P | P=1 (one thread) | async 1F1B | sync GPipe M=P | sync GPipe M=4P | async / sync M=P | GPipe bubble M=P |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for net in "8x64:--hidden 64:2400" "8x256:--hidden 256:240"; do
    IFS=: read -r name args microbatches <<<"$net"
    # shellcheck disable=SC2086
    local base
    base=$(median "$repeats" run threads 1 $args --steps "$microbatches")
    for transport in $transports; do
      for P in 4 8; do
        local a s1 s4
        # shellcheck disable=SC2086
        a=$(median "$repeats" run "$transport" "$P" $args --steps "$microbatches")
        # shellcheck disable=SC2086
        s1=$(median "$repeats" run "$transport" "$P" $args --schedule sync --microbatches "$P" --steps $((microbatches / P)))
        # shellcheck disable=SC2086
        s4=$(median "$repeats" run "$transport" "$P" $args --schedule sync --microbatches $((4 * P)) \
          --steps $((microbatches / (4 * P))))
        awk -v n="$name" -v t="$transport" -v P="$P" -v b="$base" -v a="$a" -v s1="$s1" -v s4="$s4" \
          'BEGIN {printf "| %s | %s | %d | %s | %s | %s | %s | %.2fx | %.0f%% |\n", n, t, P, b, a, s1, s4, a / s1, 100 * (P - 1) / (2 * P - 1)}'
      done
    done
  done
  echo
  echo "microbatches/s (batch 32, Adam), median of $repeats runs; load after: $(cut -d' ' -f1-3 /proc/loadavg)"
}

convergence() {
  local seeds=${1:-1 2 3}
  local methods=${2:-adam pipedream-lr rot-cov-bi rot-cov-bi+pipedream-lr}
  # P:extra arguments; the first one is the baseline of the slowdowns (P = 1)
  local configs=${3:-1: 2: 4: 8: 2:--no-stashing 4:--no-stashing 8:--no-stashing}
  local header="| method |" rule="|---|"
  for cfg in $configs; do
    IFS=: read -r P extra <<<"$cfg"
    header="$header P=$P${extra:+ ${extra#--}} |"
    rule="$rule---|"
  done
  echo "$header"
  echo "$rule"
  for method in $methods; do
    local row="| $method |" base=""
    for cfg in $configs; do
      IFS=: read -r P extra <<<"$cfg"
      local its=()
      for seed in $seeds; do
        # shellcheck disable=SC2086
        run threads "$P" --method "$method" --steps 2000 --seed "$seed" $extra
        its+=("$(field "$tmp/run.json" iterations_to_target)")
      done
      # median with "-" (target not reached) counted as larger than everything
      local med
      med=$(printf '%s\n' "${its[@]}" | sed 's/^-$/999999/' | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
      local cell
      if [ "$med" = 999999 ]; then cell="> 2000"; else cell=$med; fi
      if [ -z "$base" ]; then
        base=$med
      elif [ "$med" != 999999 ] && [ "$base" != 999999 ]; then
        cell="$cell ($(awk -v m="$med" -v b="$base" 'BEGIN {printf "%.2f", m / b}')x)"
      fi
      row="$row $cell <sub>[${its[*]}]</sub> |"
    done
    echo "$row"
  done
  echo
  echo "iterations until the mean training loss of the last 50 steps <= 0.05 (digits, 8x64 tanh MLP, batch 32, 2000 steps);"
  echo "median over seeds $seeds, per-seed values in brackets (- = not reached); (x) = slowdown vs P=1."
}

case $what in
  throughput) throughput "${3:-threads mpi}" "${4:-3}" ;;
  convergence) convergence "${3:-1 2 3}" "${4:-}" "${5:-}" ;;
  *) echo "measure.sh: unknown measurement '$what' (throughput or convergence)" >&2; exit 2 ;;
esac
