#!/usr/bin/env bash
# Runs every experiment of docs/convergence.md with delayopt_convergence and writes one JSON per
# experiment to OUT (default docs/data/convergence), JOBS at a time (default: the core count).
# Each job is single-threaded (OMP_NUM_THREADS=1): the parallelism is across experiments.
#
#   bench/convergence_study.sh [build/default/bench/delayopt_convergence] [experiment-prefix...]
#
# then bench/convergence_report.py OUT renders the tables and PNGs. ~6.5 hours on 2 cores (P = 32: more than half).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${1:-$root/build/default/bench/delayopt_convergence}
shift || true
out=${OUT:-$root/docs/data/convergence}
jobs=${JOBS:-$(nproc)}
[ -x "$bin" ] || { echo "convergence_study.sh: $bin not built (cmake --build build/default)" >&2; exit 1; }
mkdir -p "$out"
export OMP_NUM_THREADS=1 OMP_PROC_BIND=false

seeds=1,2,3
mlp="--problem mlp --seeds $seeds --max-iters 16000"
coord="adam pipedream-lr nesterov dcasgd weight-pred"
rot="rot-cov-bi rot-cov-uni rot-mom-bi rot-mom-uni rot-cov-bi+nesterov rot-cov-bi+dcasgd rot-cov-bi+weight-pred rot-cov-bi+pipedream-lr"

# name|arguments: one line per job.
experiments() {
  for m in $coord $rot; do echo "mlp-main-$m|$mlp --stages 1,2,4,8,16 --methods $m"; done
  # Noisier gradients (batch 4, 8 and 16): closer to the noise-limited regime of the paper's LLM runs.
  for b in 4 8 16; do
    for m in $coord rot-cov-bi rot-cov-bi+nesterov rot-cov-bi+weight-pred; do
      echo "mlp-b$b-$m|$mlp --batch $b --stages 1,16 --methods $m"
    done
  done
  # P = 32 needs more than 16000 steps for every method (a 16000 cap left all of them short), and
  # the coordinate methods' best rate at P = 32 is below the default grid's 1e-4.
  for m in adam pipedream-lr nesterov rot-cov-bi rot-cov-bi+nesterov; do
    echo "mlp-l32-$m|${mlp/16000/50000} --layers 32 --stages 1,32 --lr-min 1e-5 --methods $m"
  done
  # P = 32 at batch 8, closer to the noise-limited regime of the paper's P = 32 runs (at batch 4
  # P = 1 alone takes ~40000 steps).
  for m in adam nesterov rot-cov-bi rot-cov-bi+nesterov; do
    echo "mlp-l32b8-$m|${mlp/16000/100000} --batch 8 --layers 32 --stages 1,32 --lr-min 1e-5 --methods $m"
  done
  for m in nesterov+weight-pred rot-cov-bi+nesterov+weight-pred; do
    echo "mlp-l32b8wp0-$m|${mlp/16000/100000} --batch 8 --layers 32 --stages 1,32 --lr-min 1e-5 --wp-gamma 0 --methods $m"
  done
  # psi at P = 32, batch 8, for the best coordinate method and the best combination there: one job
  # per seed, P = 32 only, five quarter-decade rates around both methods' best at psi 0.004.
  grid5=3.1622776601683794e-4,5.623413251903491e-4,1e-3,1.7782794100389228e-3,3.1622776601683794e-3
  for p in 0 0.0005 0.001 0.002 0.008; do
    for m in nesterov+weight-pred rot-cov-bi+nesterov+weight-pred; do
      for s in 1 2 3; do
        echo "mlp-l32b8psi-$p-$m-s$s|--problem mlp --seeds $s --max-iters 100000 --batch 8 --layers 32 --stages 32 --wp-gamma 0 --nadam-momentum-decay $p --lr-grid $grid5 --methods $m"
      done
    done
  done
  # P = 1 for each method at its best psi there, for the slowdown.
  for m_p in nesterov+weight-pred_0.001 rot-cov-bi+nesterov+weight-pred_0.002; do
    for s in 1 2 3; do
      echo "mlp-l32b8psi1-${m_p#*_}-${m_p%_*}-s$s|--problem mlp --seeds $s --max-iters 100000 --batch 8 --layers 32 --stages 1 --wp-gamma 0 --nadam-momentum-decay ${m_p#*_} --lr-grid $grid5 --methods ${m_p%_*}"
    done
  done
  echo "mlp-l32wp0-rot-cov-bi+weight-pred|${mlp/16000/50000} --layers 32 --stages 1,32 --lr-min 1e-5 --wp-gamma 0 --methods rot-cov-bi+weight-pred"
  # Prediction from the last step with NAdam in the basis (the best combination at P = 16) and, as
  # baselines, with Adam and NAdam in the coordinate basis; one job per seed.
  for m in rot-cov-bi+nesterov+weight-pred weight-pred nesterov+weight-pred; do
    for s in 1 2 3; do
      echo "mlp-l32wp0-$m-s$s|--problem mlp --seeds $s --max-iters 50000 --layers 32 --stages 1,32 --lr-min 1e-5 --wp-gamma 0 --methods $m"
    done
  done
  # The coordinate methods miss the 50000 cap at P = 32: their own counts with 150000 steps, one job
  # per seed, on the five quarter-decade rates around the 50000-step runs' best (1e-4).
  for m in adam pipedream-lr nesterov; do
    for s in 1 2 3; do
      echo "mlp-l32long-$m-s$s|--problem mlp --seeds $s --max-iters 150000 --layers 32 --stages 32 --lr-grid 3.1623e-4,1.7783e-4,1e-4,5.6234e-5,3.1623e-5 --methods $m"
    done
  done
  for m in adam pipedream-lr nesterov rot-cov-bi rot-cov-bi+nesterov; do
    echo "mlp-nostash-$m|$mlp --stages 4,16 --stashing off --methods $m"
  done
  for k in 1 3 30 100; do echo "mlp-refresh-$k|$mlp --stages 16 --methods rot-cov-bi --refresh-every $k"; done
  for s in proportional uniform inverse; do
    echo "mlp-budget-$s|$mlp --stages 16 --methods rot-cov-bi --refresh-window 160 --refresh-budget 64 --refresh-split $s"
  done
  # PipeDream-LR's T_c (the main runs anneal over the 16000-step cap; the paper tunes it).
  for t in 250 1000 4000; do
    echo "mlp-tc-$t|$mlp --stages 16 --methods pipedream-lr,rot-cov-bi+pipedream-lr --anneal-steps $t"
  done
  # delay::Nesterov's weight-space look-ahead around Adam, in the coordinates and in the basis.
  for g in 0.25 0.5 0.9; do
    echo "mlp-nag-$g|$mlp --stages 1,16 --methods nag,rot-cov-bi+nag --nag-gamma $g"
  done
  for l in 10 100 1000; do
    echo "mlp-lambda-$l|$mlp --stages 16 --methods dcasgd,rot-cov-bi+dcasgd --dcasgd-lambda $l"
  done
  local single="--seeds $seeds --max-iters 20000 --methods adam,pipedream-lr,nesterov,dcasgd,rot-cov-bi,full-eigen,rot-cov-bi+nesterov"
  for n in 0 1; do
    echo "quadratic-noise$n|--problem quadratic --dim 32 --kappa 100 --noise $n --tau 0,4,16,32 --target 1e-2 $single"
    echo "kron-noise$n|--problem kron-lstsq --rows 16 --cols 8 --kappa 100 --noise $n --tau 0,4,16,32 --target 1e-2 $single,rot-cov-uni,rot-mom-bi,rot-mom-uni"
  done
  # Isotropic noise (not shaped like the Hessian), as large as still lets Adam reach the 1e-2 target
  # in ~2000-5000 steps at tau = 0 (noise 10 on the quadratic and 1 on kron-lstsq let no method).
  echo "quadratic-iso|--problem quadratic --dim 32 --kappa 100 --noise 1 --noise-shape isotropic --tau 0,4,16,32 --target 1e-2 $single"
  echo "kron-iso|--problem kron-lstsq --rows 16 --cols 8 --kappa 100 --noise 0.3 --noise-shape isotropic --tau 0,4,16,32 --target 1e-2 $single"
  # Weight prediction from the last step (gamma = 0) over P; gamma = 0.9 is in the main runs.
  for m in weight-pred rot-cov-bi+weight-pred rot-cov-bi+nesterov+weight-pred; do
    echo "mlp-wp0-$m|$mlp --stages 1,2,4,8,16 --methods $m --wp-gamma 0"
  done
  for b in 4 8 16; do
    echo "mlp-wp0batch-b$b|$mlp --batch $b --stages 1,16 --methods rot-cov-bi+weight-pred --wp-gamma 0"
  done
  for g in 0 0.25 0.5 0.99; do
    echo "mlp-wpgamma-$g|$mlp --stages 16 --methods weight-pred,rot-cov-bi+weight-pred --wp-gamma $g"
  done
  echo "mlp-nadam-wp|$mlp --stages 16 --methods nesterov+weight-pred,rot-cov-bi+nesterov+weight-pred"
  echo "mlp-nadam-wp-0.25|$mlp --stages 16 --methods nesterov+weight-pred,rot-cov-bi+nesterov+weight-pred --wp-gamma 0.25"
  for m in nesterov rot-cov-bi+nesterov; do
    echo "mlp-stagemom-$m|$mlp --stages 16 --methods $m --stage-momentum 0.9"
  done
  # NAdam's beta1 (0.99 elsewhere), in the coordinate basis and in the rotated one.
  for b in 0.98 0.995 0.999; do
    echo "mlp-nadambeta-$b|$mlp --stages 1,16 --methods nesterov,rot-cov-bi+nesterov --nadam-beta1 $b"
  done
  echo "mlp-nadam-wp0|$mlp --stages 16 --methods nesterov+weight-pred,rot-cov-bi+nesterov+weight-pred --wp-gamma 0"
  echo "mlp-nadam-wp0-p1|$mlp --stages 1 --methods rot-cov-bi+nesterov+weight-pred --wp-gamma 0"
  echo "mlp-nadam-wp0-beta0.995|$mlp --stages 16 --methods rot-cov-bi+nesterov+weight-pred --wp-gamma 0 --nadam-beta1 0.995"
  # Adam's beta1 (0.9 elsewhere; SOAP's 0.95, and the 0.99 that helps NAdam under delay).
  for b in 0.95 0.99; do
    echo "mlp-adambeta-$b|$mlp --stages 1,16 --methods adam,rot-cov-bi --adam-beta1 $b"
  done
  # beta2 of Adam and NAdam (0.999 elsewhere, the paper's; SOAP's 0.95). The rotated methods take it
  # as the EMA factor of L and R too, as the paper's code does.
  for b in 0.95 0.99; do
    for m in adam nesterov rot-cov-bi rot-cov-bi+nesterov; do
      echo "mlp-beta2-$b-$m|$mlp --stages 1,16 --methods $m --beta2 $b"
    done
  done
  for m in rot-cov-bi rot-cov-bi+nesterov; do  # the same with the paper's L, R EMA factor
    echo "mlp-beta2-0.95-basis0.999-$m|$mlp --stages 1,16 --methods $m --beta2 0.95 --basis-beta 0.999"
  done
  # SGD with heavy-ball momentum 0.9 (PipeDream's optimizer), alone and with weight prediction.
  for m in sgd sgd+weight-pred; do echo "mlp-sgd-$m|$mlp --stages 1,16 --methods $m"; done
  # Gradient clipping to a global norm per stage (off elsewhere; the paper's code clips to 1). A
  # stage's gradient norm is ~9 at the start and ~1-2 near the target, so 0.3 and 1 bind throughout.
  for c in 0.3 1 3; do
    for m in adam nesterov rot-cov-bi rot-cov-bi+nesterov; do
      echo "mlp-clip-$c-$m|$mlp --stages 1,16 --methods $m --clip $c"
    done
  done
  for m in nesterov+weight-pred rot-cov-bi+nesterov+weight-pred; do
    echo "mlp-clip-1-wp0-$m|$mlp --stages 1,16 --methods $m --clip 1 --wp-gamma 0"
  done
  # Clip and beta2 together, for NAdam and the best combination (prediction from the last step;
  # --wp-gamma only acts on the latter).
  for b in 0.99 0.95; do
    echo "mlp-clipbeta2-1-$b-nesterov|$mlp --stages 1,16 --wp-gamma 0 --methods nesterov --clip 1 --beta2 $b"
    for c in 0 1; do
      echo "mlp-clipbeta2-$c-$b-rot-cov-bi+nesterov+weight-pred|$mlp --stages 1,16 --wp-gamma 0 --methods rot-cov-bi+nesterov+weight-pred --clip $c --beta2 $b"
    done
  done
  # The input covariance's condition number (100 elsewhere): how the picture moves with the problem.
  for k in 10 1000; do
    for m in adam nesterov rot-cov-bi rot-cov-bi+nesterov; do
      echo "mlp-kappa-$k-$m|$mlp --stages 1,16 --kappa $k --methods $m"
    done
  done
  # NAdam's look-ahead schedule psi (torch's 0.004 elsewhere) on a factor-2 grid, for every NAdam
  # method of the P = 16 comparison: with and without rotation, with and without prediction.
  for p in 0.008 0.016 0.032 0.064 0.128; do
    for m in nesterov rot-cov-bi+nesterov; do
      echo "mlp-psi-$p-$m|$mlp --stages 1,16 --methods $m --nadam-momentum-decay $p"
    done
    for m in nesterov+weight-pred rot-cov-bi+nesterov+weight-pred; do
      echo "mlp-psi-$p-$m|$mlp --stages 1,16 --methods $m --nadam-momentum-decay $p --wp-gamma 0"
    done
  done
  # The same at batch 4 (its runs are ~3x longer), without prediction.
  for p in 0.008 0.016 0.032; do
    for m in nesterov rot-cov-bi+nesterov; do
      echo "mlp-b4psi-$p-$m|$mlp --batch 4 --stages 1,16 --methods $m --nadam-momentum-decay $p"
    done
  done
  # P = 1 ... 16 for each NAdam method at its best psi of the grid above (--wp-gamma only acts on
  # the two with prediction).
  for m_p in nesterov_0.016 rot-cov-bi+nesterov_0.032 nesterov+weight-pred_0.064 rot-cov-bi+nesterov+weight-pred_0.064; do
    echo "mlp-psicurve-${m_p%_*}|$mlp --stages 1,2,4,8,16 --methods ${m_p%_*} --nadam-momentum-decay ${m_p#*_} --wp-gamma 0"
  done
  # P = 32 with the psi that was best at P = 16 for both methods with prediction (0.064), and two
  # smaller ones for the ~10x longer runs; one job per seed.
  for p in 0.064 0.008 0.016; do
    for m in rot-cov-bi+nesterov+weight-pred nesterov+weight-pred; do
      for s in 1 2 3; do
        echo "mlp-l32psi-$p-$m-s$s|--problem mlp --seeds $s --max-iters 50000 --layers 32 --stages 1,32 --lr-min 1e-5 --wp-gamma 0 --nadam-momentum-decay $p --methods $m"
      done
    done
  done
  # Problem scales (teacher and initial student weights), one seed: does the picture depend on them?
  for ts_is in 1_1 1_0.25 1_0 0.5_0.5 1.5_1; do
    echo "mlp-scale-t${ts_is%_*}-i${ts_is#*_}|--problem mlp --seeds 1 --max-iters 16000 --stages 1,16 --teacher-scale ${ts_is%_*} --init-scale ${ts_is#*_} --methods adam,nesterov,rot-cov-bi,rot-cov-bi+nesterov"
  done
  # The PyTorch oracle (bench/torch_mlp_reference.py; "@torch" runs it instead of delayopt_convergence):
  # the headline's four methods on delayopt's draws (must match mlp-main-* run for run) and on
  # torch's; and Adam's spread over 24 problem instances at one rate, from both programs' draws.
  for m in adam nesterov rot-cov-bi rot-cov-bi+nesterov; do
    for rng in delayopt torch; do echo "torch-ref-$rng-$m|@torch --rng $rng --seeds $seeds --stages 1,16 --methods $m"; done
  done
  for m in nesterov+weight-pred rot-cov-bi+nesterov+weight-pred; do  # against mlp-wp0-*
    for rng in delayopt torch; do echo "torch-ref-$rng-wp0-$m|@torch --rng $rng --seeds $seeds --stages 1,16 --wp-gamma 0 --methods $m"; done
  done
  # Does the delay model matter? Each stage's gradient from the whole network at its stale version.
  echo "torch-ref-perstage|@torch --delay-model per-stage --seeds 1 --stages 16 --methods nesterov,rot-cov-bi,rot-cov-bi+nesterov --lr-grid 5.6234132519034910e-4,1e-3,1.7782794100389228e-3,3.1622776601683794e-3,5.623413251903491e-3"
  many=$(seq -s, 1 24)
  echo "torch-ref-spread-delayopt|--problem mlp --seeds $many --max-iters 16000 --stages 1 --methods adam --lr-grid 0.005623413251903491"
  echo "torch-ref-spread-torch|@torch --rng torch --seeds $many --stages 1 --methods adam --lr-grid 0.005623413251903491"
  echo "probe-kron|--problem kron-lstsq --rows 16 --cols 8 --kappa 100 --tau 0 --seeds $seeds --methods adam --probe"
  echo "probe-mlp|--problem mlp --stages 1 --seeds $seeds --methods adam --probe"
}

run_one() {
  local name=${1%%|*} args=${1#*|} cmd=("$bin")
  [[ $args == @torch* ]] && cmd=("$torch_python" "$root/bench/torch_mlp_reference.py") args=${args#@torch}
  # shellcheck disable=SC2086
  "${cmd[@]}" $args --json "$out/$name.json" >"$out/$name.log" 2>&1 && echo "done  $name" || echo "FAILED $name (see $out/$name.log)"
}
# Debian's python3-torch is in /usr/bin/python3 (a pyenv python3 on PATH may lack it).
torch_python=${TORCH_PYTHON:-/usr/bin/python3}
export -f run_one
export bin out root torch_python
experiments | { if [ $# -gt 0 ]; then grep -E "^($(IFS='|'; echo "$*"))"; else cat; fi; } |
  xargs -P "$jobs" -I{} bash -c 'run_one "$@"' _ {}
