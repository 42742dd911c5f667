#!/usr/bin/python3
"""Time PyTorch's CPU Adam step, as a baseline for delayopt's C++ Adam.

Run (from the repository root):

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=-1 OMP_NUM_THREADS=2 \
        /usr/bin/python3 bench/torch_adam.py [--json out.json]

Use Debian's /usr/bin/python3 (python3-torch), not a pyenv python3.

The malloc settings matter: torch's Adam (both variants) allocates
param-sized temporaries every step. With glibc defaults those come from fresh
mmap()s that are unmapped again afterwards, so every step pays page faults
(32K per step at 16M) and the benchmark measures the kernel, not Adam.
MALLOC_MMAP_MAX_=0 keeps them on the heap and MALLOC_TRIM_THRESHOLD_=-1 stops
glibc returning it to the OS; the flt/step column should then read 0.

Run it on an otherwise idle machine: with 2 cores, one concurrent compile
can slow OpenMP steps by 100x. The script warns if the CPUs are busy.

Throughput uses the 28-byte convention: per fp32 param, read p,g,m,v and
write p,m,v (7 * 4 bytes), regardless of what torch actually touches.
"""
import argparse
import gc
import json
import os
import re
import resource
import statistics
import sys
import time

import torch

BYTES_PER_PARAM = 28
MIN_REPEAT_S = 0.3  # scale steps so a repeat is long enough to time reliably
WARMUP_STEPS = 3
UNITS = {"": 1, "K": 2**10, "Ki": 2**10, "M": 2**20, "Mi": 2**20, "G": 2**30, "Gi": 2**30}
VARIANTS = [("foreach=False", {"foreach": False}),
            ("foreach=True", {"foreach": True}),
            ("fused=True", {"fused": True})]  # CUDA-only in torch 1.13: raises on CPU


def parse_count(s):
    m = re.fullmatch(r"(\d+)(|K|Ki|M|Mi|G|Gi)", s.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"bad element count {s!r}")
    return int(m.group(1)) * UNITS[m.group(2)]


def configs(args):
    """(name, [tensor sizes]) for each config."""
    out = [(s.strip(), [parse_count(s)]) for s in args.sizes.split(",") if s.strip()]
    for spec in filter(None, (b.strip() for b in args.blocked.split(","))):
        n, _, each = spec.partition("x")
        out.append((spec, [parse_count(each)] * int(n)))
    return out


def cpu_busy(interval=0.5):
    """Fraction of all CPUs busy over interval, from /proc/stat (None if absent)."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return sum(v), v[3] + v[4]  # total, idle + iowait
    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except OSError:
        return None
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def run_steps(opt, steps):
    """Seconds taken, and minor page faults per step (should be ~0)."""
    f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    for _ in range(steps):
        opt.step()
    dt = time.perf_counter() - t0
    return dt, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / steps


def setup(sizes, kwargs, seed, min_steps):
    """Warmed-up optimizer, and the steps per repeat that take >= MIN_REPEAT_S."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(n, generator=gen, dtype=torch.float32) for n in sizes]
    for p in params:
        p.grad = torch.randn(p.numel(), generator=gen, dtype=torch.float32)
    opt = torch.optim.Adam(params, lr=1e-3, weight_decay=0, **kwargs)
    run_steps(opt, WARMUP_STEPS)  # allocates m, v and warms the heap
    steps = min_steps  # calibrate by doubling; a single step is too noisy to extrapolate
    while run_steps(opt, steps)[0] < MIN_REPEAT_S:
        steps *= 2
    return opt, steps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1M,16M,64M", help="single-tensor sizes (M = 2**20)")
    ap.add_argument("--blocked", default="256x64Ki", help="NxSIZE: N tensors of SIZE ('' = none)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10, help="min steps per repeat")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()

    if "MALLOC_MMAP_MAX_" not in os.environ:
        print("WARNING: MALLOC_MMAP_MAX_ is not set; timings will include page faults. "
              "Run with MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=-1 (see docstring).",
              file=sys.stderr)
    busy = cpu_busy()
    if busy is not None and busy > 0.1:  # OpenMP spin-waits collapse when oversubscribed
        print(f"WARNING: CPUs {busy:.0%} busy before start; timings will be unreliable.",
              file=sys.stderr)
    torch.set_num_threads(args.threads)
    context = {"torch": torch.__version__, "python": sys.version.split()[0],
               "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
               "cpu_busy_before": busy,
               **{k: os.environ.get(k) for k in
                  ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")}}
    print("# " + ", ".join(f"{k}={v}" for k, v in context.items()))
    hdr = (f"{'config':>10} {'params':>10} {'tensors':>7} {'variant':>14} {'steps':>5} "
           f"{'ms/step':>9} {'GB/s(28B)':>9} {'flt/step':>8}")
    print(hdr + "\n" + "-" * len(hdr))

    results = []
    for name, sizes in configs(args):
        n_params, live, rows = sum(sizes), [], []
        for vname, kwargs in VARIANTS:
            try:
                live.append((vname, *setup(sizes, kwargs, args.seed, args.steps), []))
            except (RuntimeError, TypeError, ValueError) as e:
                print(f"{name:>10} {'':>10} {'':>7} {vname:>14}  skipped: "
                      f"{str(e).splitlines()[0]}")
        # Round-robin the repeats: this VM's memory bandwidth drifts over seconds,
        # and interleaving makes a slow window hit every variant alike.
        for _ in range(args.repeats):
            for _, opt, steps, runs in live:
                runs.append(run_steps(opt, steps))
        for vname, _, steps, runs in live:
            all_ms = [dt / steps * 1e3 for dt, _ in runs]
            med = statistics.median(all_ms)
            rows.append(dict(name=name, params=n_params, tensors=len(sizes), variant=vname,
                             median_ms_per_step=med,
                             bytes_per_sec_28B=BYTES_PER_PARAM * n_params / (med / 1e3),
                             all_ms=all_ms, steps_per_repeat=steps,
                             minflt_per_step=max(f for _, f in runs), best=False))
        del live  # free this config's tensors before the next one allocates
        gc.collect()
        if rows:
            min(rows, key=lambda r: r["median_ms_per_step"])["best"] = True
        for r in rows:
            print(f"{name:>10} {n_params:>10} {r['tensors']:>7} {r['variant']:>14} "
                  f"{r['steps_per_repeat']:>5} {r['median_ms_per_step']:>9.3f} "
                  f"{r['bytes_per_sec_28B'] / 1e9:>9.2f} {r['minflt_per_step']:>8.0f}"
                  f"{'  best' if r['best'] else ''}")
        results += rows

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"context": context, "results": results}, f, indent=2)
        print(f"# wrote {args.json}")


if __name__ == "__main__":
    main()
