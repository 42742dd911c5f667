#!/usr/bin/env python3
"""Tables (Markdown) and plots (PNG, gnuplot) from the JSON files of bench/convergence_study.sh.

    bench/convergence_report.py [docs/data/convergence] > tables.md

Metrics (the basis-rotation paper's): the median over seeds of the iterations to the target; the
slowdown T(P) / T(1) (ratio of the medians); "% fewer" = 1 - T_method / T_best, T_best the smallest
median among the coordinate-basis methods at the same P. A run that never reached the target
counts as more than --max-iters (shown as ">N"); a median over such runs is shown the same way.
"""
import json
import os
import statistics
import subprocess
import sys

COORD = ["adam", "pipedream-lr", "nesterov", "dcasgd", "weight-pred", "nesterov+weight-pred", "sgd", "sgd+weight-pred"]


def load(d, name):
    p = os.path.join(d, name + ".json")
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def json_names(d, prefix):
    """The names (without .json) of the JSON files in d starting with prefix, sorted; a prefix ending
    in "." names exactly one file (prefix + "json")."""
    exact = prefix.endswith(".")
    return [fn[:-5] for fn in sorted(os.listdir(d))
            if (fn == prefix + "json" if exact else fn.startswith(prefix) and fn.endswith(".json"))]


def collect(d, prefix, field="iters_to_target"):
    """{(method, delay): [field per seed]} over json_names(d, prefix)."""
    out, key = {}, None
    for name in json_names(d, prefix):
        doc = load(d, name)
        for r in doc["records"]:
            key = "stages" if "stages" in r else "tau"
            out.setdefault((r["method"], r[key]), []).append(r[field])
    return out


INF = float("inf")


def gamma0_label(m):
    """The label of method m run with weight prediction from the last step (--wp-gamma 0)."""
    return m + " (γ = 0)"


# Coordinate-basis methods, including weight prediction from the last step (--wp-gamma 0, labelled by gamma0()).
COORD0 = COORD + [gamma0_label(m) for m in COORD]


def gamma0(data):
    """The same records labelled as weight prediction from the last step (--wp-gamma 0)."""
    return {(gamma0_label(m), p): v for (m, p), v in data.items()}


def median(vals):
    return statistics.median([INF if v is None else v for v in vals])


def fmt(x, cap=16000):
    return ">%d" % cap if x == INF else "%d" % round(x)


def per_seed(vals, cap=16000):
    """The seeds' iteration counts, ">cap" for a run that missed the target."""
    return ", ".join(fmt(INF if v is None else v, cap) for v in vals)


def slowdown(t0, t, cap=16000):
    """T(P) / T(1) from finite T(1) = t0; ">x" bounds it when T(P) missed the cap."""
    return "%.1f×" % (t / t0) if t != INF else ">%.1f×" % (cap / t0)


def pct(method, best):
    if best == INF or method == INF:
        return "n/a"
    return "%+.0f%%" % (100 * (1 - method / best)) if method != best else "0%"


def p16_row(prefix, data, m, extra=()):
    """'| prefix... | T(1) | T(16) | slowdown | extra(T(16))... | per seed at 16 |' for method m, or None
    when data lacks P = 1 or 16."""
    if (m, 1) not in data or (m, 16) not in data:
        return None
    t1, t16 = median(data[(m, 1)]), median(data[(m, 16)])
    cells = list(prefix) + [fmt(t1), fmt(t16), slowdown(t1, t16)] + [f(t16) for f in extra]
    return "| " + " | ".join(cells + [per_seed(data[(m, 16)])]) + " |"


def p16_rows(specs):
    """p16_row(*spec) for each spec, leaving out those without P = 1 and 16."""
    return [r for r in (p16_row(*spec) for spec in specs) if r]


def table(data, methods, delays, cap, delay_name="P", coord=COORD):
    """Median iterations, slowdown vs the first delay, % fewer than the best coordinate method."""
    med = {(m, p): median(data[(m, p)]) for (m, p) in data}
    best = {p: min([med[(m, p)] for m in coord if (m, p) in med] or [INF]) for p in delays}
    lines = ["| method | " + " | ".join("%s = %d" % (delay_name, p) for p in delays) +
             " | slowdown %s=%d | %% fewer than best coordinate method at %s=%d |" % (delay_name, delays[-1],
                                                                                    delay_name, delays[-1]),
             "|---" * (len(delays) + 3) + "|"]
    for m in methods:
        if not all((m, p) in med for p in delays):
            continue
        row = [fmt(med[(m, p)], cap) for p in delays]
        t0, t1 = med[(m, delays[0])], med[(m, delays[-1])]
        slow = "—" if t0 == INF else slowdown(t0, t1, cap)
        b = best[delays[-1]]
        # Every coordinate method missed the cap: the method needs at least 1 - T / cap fewer.
        fewer = "—" if m in coord else ">%s" % pct(t1, cap) if b == INF and t1 != INF else pct(t1, b)
        lines.append("| %s | %s | %s | %s |" % (m, " | ".join(row), slow, fewer))
    lines.append("| *best coordinate* | " + " | ".join(fmt(best[p], cap) for p in delays) + " | | |")
    return "\n".join(lines), med, best


def psi_table(grid, psis, methods, coord, fewer_title, knob="ψ"):
    """A hyperparameter grid at P = 16 (NAdam's psi, or the knob named): each method's count per value,
    its best value with P = 1 and the slowdown there, and % fewer than the best of the coord methods,
    each at its own best value. grid maps (method, value) to {P: counts}."""
    best_p = {m: min((p for p in psis if (m, p) in grid), key=lambda p: median(grid[(m, p)][16]))
              for m in methods if any((m, p) in grid for p in psis)}
    coord_best = min(median(grid[(m, best_p[m])][16]) for m in coord if m in best_p)
    lines = ["| method | " + " | ".join("%s = %s" % (knob, p) for p in psis) +
             " | best %s | P = 1 at best %s | slowdown | %s | per seed at 16 |" % (knob, knob, fewer_title),
             "|---" * (len(psis) + 6) + "|"]
    for m, p in best_p.items():
        label = gamma0_label(m) if m.endswith("weight-pred") else m
        cells = [fmt(median(grid[(m, q)][16])) if (m, q) in grid else "" for q in psis]
        t16, t1 = median(grid[(m, p)][16]), median(grid[(m, p)][1]) if 1 in grid[(m, p)] else None
        lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            label, " | ".join(cells), p, fmt(t1) if t1 else "", slowdown(t1, t16) if t1 else "",
            "—" if m in coord else pct(t16, coord_best), per_seed(grid[(m, p)][16])))
    return "\n".join(lines)


def knob_grid(methods, values, data_of, need_p1=False):
    """{(method, value): {P: counts}} for P = 1 and 16 over a hyperparameter's values, psi_table's input;
    data_of(method, value) gives the collect() records, and a pair is kept where P = 16 was run (and
    P = 1, with need_p1)."""
    grid = {}
    for m in methods:
        for v in values:
            data = data_of(m, v)
            if (m, 16) in data and (not need_p1 or (m, 1) in data):
                grid[(m, v)] = {P: data[(m, P)] for P in (1, 16) if (m, P) in data}
    return grid


def plot(path, med, best, methods, delays, title):
    """Two panels: slowdown T(P)/T(1) and % fewer iterations than the best coordinate method."""
    base = os.path.splitext(path)[0]
    with open(base + ".dat", "w") as f:
        for i, m in enumerate(methods):
            f.write("# %s\n" % m)
            for p in delays:
                t, t0 = med.get((m, p), INF), med.get((m, delays[0]), INF)
                if t == INF or t0 == INF:
                    continue
                fewer = 100 * (1 - t / best[p]) if best[p] != INF else 0
                f.write("%d %g %g\n" % (p, t / t0, fewer))
            f.write("\n\n")
    gp = ["set terminal pngcairo size 1200,460 font 'sans,10'", "set output '%s'" % path,
          "set multiplot layout 1,2 title '%s'" % title, "set logscale x 2", "set xlabel 'pipeline stages P'",
          "set key left top", "set grid", "set ylabel 'slowdown T(P) / T(1)'",
          "plot " + ", ".join("'%s.dat' index %d using 1:2 with linespoints lt %d title '%s'" % (base, i, i + 1, m)
                              for i, m in enumerate(methods)),
          # Rotated methods only: the coordinate methods other than the best fall far below 0 and
          # would squash the scale.
          "set ylabel '% fewer iterations than the best coordinate-basis method'", "set key left bottom",
          "set yrange [-100:100]",
          "plot 0 with lines lc 'gray' dt 2 title 'best coordinate method', " +
          ", ".join("'%s.dat' index %d using 1:3 with linespoints lt %d title '%s'" % (base, i, i + 1, m)
                    for i, m in enumerate(methods) if m not in COORD),
          "unset multiplot"]
    subprocess.run(["gnuplot"], input="\n".join(gp), text=True, check=True)
    os.remove(base + ".dat")


def psi32_table(d, psis, prefixes, cap):
    """NAdam with prediction (gamma = 0) and the combination at P = 32 over NAdam's psi: P = 1 (where
    it was run), P = 32, slowdown, % fewer than the best coordinate count over every psi, per seed.
    prefixes(psi, method) names the collect() prefixes that hold those runs. None below two psi."""
    rows, best32 = [], {}
    for p in psis:
        for m in ["nesterov+weight-pred", "rot-cov-bi+nesterov+weight-pred"]:
            data = {}
            for prefix in prefixes(p, m):
                data.update(collect(d, prefix))
            if len(data.get((m, 32), [])) == 3:
                best32[(m, p)] = median(data[(m, 32)])
                rows.append((m, p, median(data[(m, 1)]) if len(data.get((m, 1), [])) == 3 else None, data[(m, 32)]))
    if not any(p != "0.004" for (_, p) in best32):
        return None
    coord32 = min(t for (m, _), t in best32.items() if not m.startswith("rot"))
    lines = ["| method | ψ | P = 1 | P = 32 | slowdown | % fewer than the best coordinate method, ψ tuned | "
             "per seed at 32 |", "|---|---|---|---|---|---|---|"]
    for m, p, t1, v in rows:
        t32 = best32[(m, p)]
        lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            gamma0_label(m), p, "" if t1 is None else fmt(t1, cap), fmt(t32, cap),
            "" if t1 is None else slowdown(t1, t32, cap), "—" if not m.startswith("rot") else pct(t32, coord32),
            per_seed(v, cap)))
    return "\n".join(lines)


def torch_oracle(d):
    """The PyTorch oracle (bench/torch_mlp_reference.py): with delayopt's draws, how many records
    reproduce delayopt_convergence's exactly; with torch's draws, the headline table; Adam's spread
    over seeds."""
    def records(prefix, wp0=None):
        """The records of json_names(d, prefix); wp0 True / False: only files run with / without
        --wp-gamma 0."""
        return [r for name in json_names(d, prefix) if wp0 is None or ("-wp0-" in name) == wp0
                for r in load(d, name)["records"]]

    def key(r):
        return r["method"], r["stages"], r["seed"]

    def by_key(recs):
        return {key(r): r for r in recs}

    out = []
    # delayopt_convergence's runs of the same configurations: the headline, and --wp-gamma 0 (batch 32).
    ours = {False: by_key(records("mlp-main-")),
            True: by_key(records("mlp-wp0-") + records("mlp-nadam-wp0.") + records("mlp-nadam-wp0-p1."))}
    same = [(r, ours[wp0].get(key(r))) for wp0 in (False, True) for r in records("torch-ref-delayopt-", wp0)]
    matched = [(r, o) for r, o in same if o is not None]
    if matched:
        agree = [r for r, o in matched
                 if o["iters_to_target"] == r["iters_to_target"] and abs(o["lr"] / r["lr"] - 1) < 1e-9]
        worst = max(abs(o["final_loss"] / r["final_loss"] - 1) for r, o in matched)
        names = sorted({r["method"] if "weight-pred" not in r["method"] else gamma0_label(r["method"])
                        for r, _ in matched}, key=lambda m: ("weight-pred" in m, m))
        out += ["### PyTorch oracle, delayopt's draws (--rng delayopt)", "",
                "- %d of %d records (%s; P = %s; seeds %s) have the iterations and best rate of delayopt_convergence's "
                "run of the same configuration; final f/f0 differ by at most %.1e (relative); %d records have no "
                "such run" % (len(agree), len(matched), ", ".join(names),
                              ", ".join(str(p) for p in sorted({r["stages"] for r, _ in matched})),
                              ", ".join(str(s) for s in sorted({r["seed"] for r, _ in matched})), worst,
                              len(same) - len(matched)), ""]
    other = {}
    for r in records("torch-ref-torch-", False):
        other.setdefault((r["method"], r["stages"]), []).append(r["iters_to_target"])
    for r in records("torch-ref-torch-", True):
        other.setdefault((gamma0_label(r["method"]), r["stages"]), []).append(r["iters_to_target"])
    if other:
        methods = [m for m in ["adam", "nesterov", gamma0_label("nesterov+weight-pred"), "rot-cov-bi",
                               "rot-cov-bi+nesterov", gamma0_label("rot-cov-bi+nesterov+weight-pred")]
                   if (m, 1) in other]
        t, _, _ = table(other, methods, [1, 16], 16000, coord=COORD0)
        seeds = ["| %s | %s |" % (m, per_seed(other[(m, 16)])) for m in methods if (m, 16) in other]
        out += ["### PyTorch oracle, torch's draws (--rng torch), median of 3 seeds", "", t, "",
                "| method | per seed at P = 16 |", "|---|---|"] + seeds + [""]
    perstage = collect(d, "torch-ref-perstage.")
    if perstage:
        out.append("- per-stage delay model (each stage's gradient from the whole network at its stale version), "
                   "seed 1: " + ", ".join("%s %s at P = %d" % (m, per_seed(v), p)
                                          for (m, p), v in sorted(perstage.items())))
    for rng in ["delayopt", "torch"]:
        spread = collect(d, "torch-ref-spread-%s." % rng)
        if spread:
            (m, p), v = next(iter(spread.items()))
            its = sorted(INF if x is None else x for x in v)
            q = statistics.quantiles(its, n=4)
            out.append("- %s at P = %d, one rate, %d seeds, %s's draws: %s ... %s, median %s, quartiles %s / %s"
                       % (m, p, len(its), rng, fmt(its[0]), fmt(its[-1]), fmt(median(its)), fmt(q[0]), fmt(q[2])))
    return out + ([""] if out and out[-1] else [])


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "docs/data/convergence"
    out = []
    main_data = collect(d, "mlp-main-")
    if main_data:
        methods = [m for m in COORD + ["rot-cov-bi", "rot-cov-uni", "rot-mom-bi", "rot-mom-uni",
                                       "rot-cov-bi+nesterov", "rot-cov-bi+dcasgd", "rot-cov-bi+weight-pred",
                                       "rot-cov-bi+pipedream-lr"] if (m, 1) in main_data]
        t, med, best = table(main_data, methods, [1, 2, 4, 8, 16], 16000)
        out += ["### MLP pipeline, 16 layers, stashing on (median of 3 seeds)", "", t, ""]
        plot(os.path.join(d, "mlp_main.png"), med, best,
             [m for m in methods if m in ("adam", "pipedream-lr", "nesterov", "dcasgd", "rot-cov-bi",
                                          "rot-cov-uni", "rot-mom-bi", "rot-cov-bi+nesterov",
                                          "rot-cov-bi+pipedream-lr")],
             [1, 2, 4, 8, 16], "16-layer residual MLP, stashing on, median of 3 seeds")
    wp0 = collect(d, "mlp-wp0-")
    if wp0 and main_data:
        data = {**main_data, **gamma0(wp0)}
        coord = COORD + ["weight-pred (γ = 0)"]
        methods = [m for m in ["adam", "nesterov", "weight-pred", "weight-pred (γ = 0)", "rot-cov-bi",
                               "rot-cov-bi+weight-pred", "rot-cov-bi+weight-pred (γ = 0)", "rot-cov-bi+nesterov",
                               "rot-cov-bi+nesterov+weight-pred (γ = 0)"]
                   if (m, 1) in data]
        t, _, _ = table(data, methods, [1, 2, 4, 8, 16], 16000, coord=coord)
        out += ["### Weight prediction with gamma = 0 (the last step as the velocity), MLP, P = 1 ... 16", "", t, ""]
    for batch in [4, 8, 16]:
        data = collect(d, "mlp-b%d-" % batch)
        if data:
            data.update(gamma0(collect(d, "mlp-wp0batch-b%d." % batch)))
            methods = [m for m in COORD + ["rot-cov-bi", "rot-cov-bi+nesterov", "rot-cov-bi+weight-pred",
                                           "rot-cov-bi+weight-pred (γ = 0)"]
                       if (m, 1) in data and (m, 16) in data]
            t, _, _ = table(data, methods, [1, 16], 16000)
            out += ["### MLP pipeline, batch %d (noisier gradients)" % batch, "", t, ""]
    l32 = collect(d, "mlp-l32-")
    l32.update(gamma0(collect(d, "mlp-l32wp0-")))
    if l32:
        methods = [m for m in ["adam", "pipedream-lr", "nesterov", "weight-pred (γ = 0)", "nesterov+weight-pred (γ = 0)",
                               "rot-cov-bi", "rot-cov-bi+nesterov", "rot-cov-bi+weight-pred (γ = 0)",
                               "rot-cov-bi+nesterov+weight-pred (γ = 0)"]
                   if (m, 1) in l32]
        t, _, _ = table(l32, methods, [1, 32], 50000, coord=COORD0)
        final = collect(d, "mlp-l32-", field="final_loss")
        final.update(gamma0(collect(d, "mlp-l32wp0-", field="final_loss")))
        lines = ["| method | median f/f0 after the last step at P = 32 | per seed |", "|---|---|---|"]
        for m in methods:
            v = final.get((m, 32), [])
            if v:
                lines.append("| %s | %.3f | %s |" % (m, statistics.median(v), ", ".join("%.3f" % x for x in v)))
        out += ["### MLP pipeline, 32 layers, P = 32", "", t, "", "\n".join(lines), ""]
        # The coordinate methods' P = 32 counts from their 150000-step runs (one file per seed).
        long_iters = collect(d, "mlp-l32long-")
        if long_iters:
            long_lr = collect(d, "mlp-l32long-", field="lr")
            merged = dict(l32)
            merged.update(long_iters)
            # Coordinate methods: those run to 150000 steps, and those of the 50000-step runs that reached
            # the target (a miss there says nothing about 150000).
            coord = [m for m in COORD0 if (m, 32) in long_iters or
                     ((m, 32) in l32 and (m, 32) not in long_iters and median(l32[(m, 32)]) != INF)]
            t, _, _ = table(merged, [m for m in methods if m not in COORD0 or m in coord], [1, 32], 150000, coord=coord)
            long_final = collect(d, "mlp-l32long-", field="final_loss")
            lines = ["| method | P = 32 iterations per seed | best lr per seed |", "|---|---|---|"]
            for m in ["adam", "pipedream-lr", "nesterov"]:
                if (m, 32) in long_iters:
                    its = long_iters[(m, 32)]
                    missed = [f for v, f in zip(its, long_final[(m, 32)]) if v is None]
                    lines.append("| %s | %s%s | %s |" % (
                        m, per_seed(its, 150000),
                        " (f/f0 %s)" % ", ".join("%.3f" % f for f in missed) if missed else "",
                        ", ".join("%.3g" % x for x in long_lr[(m, 32)])))
            out += ["### MLP pipeline, 32 layers, P = 32, coordinate methods run to 150000 steps", "", t, "",
                    "\n".join(lines), ""]
    l32b8 = collect(d, "mlp-l32b8-")
    l32b8.update(gamma0(collect(d, "mlp-l32b8wp0-")))
    if l32b8:
        methods = [m for m in ["adam", "nesterov", "nesterov+weight-pred (γ = 0)", "rot-cov-bi", "rot-cov-bi+nesterov",
                               "rot-cov-bi+nesterov+weight-pred (γ = 0)"] if (m, 1) in l32b8]
        t, _, _ = table(l32b8, methods, [1, 32], 100000, coord=COORD0)
        lines = ["| method | per seed at P = 1 | per seed at P = 32 |", "|---|---|---|"]
        for m in methods:
            lines.append("| %s | %s | %s |" % (m, per_seed(l32b8[(m, 1)], 100000),
                                               per_seed(l32b8.get((m, 32), []), 100000)))
        out += ["### MLP pipeline, 32 layers, P = 32, batch 8", "", t, "", "\n".join(lines), ""]
    nostash = collect(d, "mlp-nostash-")
    if nostash and main_data:
        lines = ["| method | P = 4 on | P = 4 off | P = 16 on | P = 16 off |", "|---|---|---|---|---|"]
        for m in ["adam", "pipedream-lr", "nesterov", "rot-cov-bi", "rot-cov-bi+nesterov"]:
            if (m, 4) in nostash and (m, 4) in main_data:
                lines.append("| %s | %s | %s | %s | %s |" % (m, fmt(median(main_data[(m, 4)])),
                                                             fmt(median(nostash[(m, 4)])),
                                                             fmt(median(main_data[(m, 16)])),
                                                             fmt(median(nostash[(m, 16)]))))
        out += ["### Stashing on vs off (median iterations)", "", "\n".join(lines), ""]
    rows = []
    for k in [1, 3, 10, 30, 100]:
        data = main_data if k == 10 else collect(d, "mlp-refresh-%d." % k)
        if data and ("rot-cov-bi", 16) in data:
            rows.append("| %d | %s |" % (k, fmt(median(data[("rot-cov-bi", 16)]))))
    if rows:
        out += ["### Refresh interval, rot-cov-bi at P = 16", "", "| refresh every | iterations |", "|---|---|"] + \
            rows + [""]
    rows = []
    for s in ["proportional", "uniform", "inverse"]:
        data = collect(d, "mlp-budget-%s." % s)
        if data:
            v = data[("rot-cov-bi", 16)]
            rows.append("| %s | %s | %s |" % (s, fmt(median(v)), per_seed(v)))
    if rows:
        out += ["### Refresh budget split, rot-cov-bi at P = 16 (64 refreshes per 160 steps)", "",
                "| split | median iterations | per seed |", "|---|---|---|"] + rows + [""]
    rows = []
    for lam in ["0.04", "10", "100", "1000"]:
        data = main_data if lam == "0.04" else collect(d, "mlp-lambda-%s." % lam)
        if data and ("dcasgd", 16) in data and ("rot-cov-bi+dcasgd", 16) in data:
            rows.append("| %s | %s | %s |" % (lam, fmt(median(data[("dcasgd", 16)])),
                                              fmt(median(data[("rot-cov-bi+dcasgd", 16)]))))
    if len(rows) > 1:
        out += ["### DC-ASGD's lambda at P = 16 (median iterations)", "",
                "| lambda | dcasgd | rot-cov-bi+dcasgd |", "|---|---|---|"] + rows + [""]
    rows = []
    for g in ["0.25", "0.5", "0.9"]:
        data = collect(d, "mlp-nag-%s." % g)
        for m, base in [("nag", "adam"), ("rot-cov-bi+nag", "rot-cov-bi")]:
            if data and all((m, P) in data for P in (1, 16)) and main_data and (base, 16) in main_data:
                t1, t16 = median(data[(m, 1)]), median(data[(m, 16)])
                rows.append("| %s | %s | %s / %s | %s | %s | %s |" % (
                    m, g, fmt(median(main_data[(base, 1)])), fmt(median(main_data[(base, 16)])), fmt(t1), fmt(t16),
                    per_seed(data[(m, 16)])))
    if rows:
        out += ["### delay::Nesterov's weight-space look-ahead around Adam (nag), P = 1 and 16", "",
                "| method | gamma | without it, P = 1 / 16 | P = 1 | P = 16 | per seed at 16 |",
                "|---|---|---|---|---|---|"] + rows + [""]
    rows = []
    for tc in ["250", "1000", "4000", "16000"]:
        data = main_data if tc == "16000" else collect(d, "mlp-tc-%s." % tc)
        pair = [data.get((m, 16)) for m in ["pipedream-lr", "rot-cov-bi+pipedream-lr"]] if data else [None]
        if all(pair):
            rows.append("| %s | %s | %s | %s | %s |" % (tc, fmt(median(pair[0])), per_seed(pair[0]),
                                                        fmt(median(pair[1])), per_seed(pair[1])))
    if len(rows) > 1:
        out += ["### PipeDream-LR's T_c at P = 16 (median iterations; 16000 = the main runs)", "",
                "| T_c | pipedream-lr | per seed | rot-cov-bi+pipedream-lr | per seed |", "|---|---|---|---|---|"] + \
            rows + [""]
    rows = []
    for m in ["nesterov", "rot-cov-bi+nesterov"]:
        data = collect(d, "mlp-stagemom-%s." % m)
        if data and (m, 16) in data and main_data and (m, 16) in main_data:
            v = data[(m, 16)]
            rows.append("| %s | %s | %s | %s |" % (m, fmt(median(main_data[(m, 16)])), fmt(median(v)),
                                                   per_seed(v)))
    if rows:
        out += ["### Per-stage momentum (beta1 = 0.9 + tau_s (0.99 - 0.9) / P) at P = 16", "",
                "| method | beta1 0.99 everywhere | per-stage beta1 | per seed |", "|---|---|---|---|"] + rows + [""]
    rows = []
    for g in ["0", "0.25", "0.5", "0.9", "0.99"]:
        data = main_data if g == "0.9" else collect(d, "mlp-wpgamma-%s." % g)
        pair = [data.get((m, 16)) for m in ["weight-pred", "rot-cov-bi+weight-pred"]] if data else [None]
        if all(pair):
            rows.append("| %s | %s | %s |" % (g, fmt(median(pair[0])), fmt(median(pair[1]))))
    if len(rows) > 1:
        out += ["### Weight prediction's gamma at P = 16 (median iterations)", "",
                "| gamma | weight-pred | rot-cov-bi+weight-pred |", "|---|---|---|"] + rows + [""]
    rows = []
    for g, name in [("0.9", "mlp-nadam-wp."), ("0.25", "mlp-nadam-wp-0.25."), ("0", "mlp-nadam-wp0.")]:
        data = collect(d, name)
        for m, base in [("nesterov+weight-pred", "nesterov"),
                        ("rot-cov-bi+nesterov+weight-pred", "rot-cov-bi+nesterov")]:
            if data and (m, 16) in data and main_data and (base, 16) in main_data:
                v = data[(m, 16)]
                rows.append("| %s | %s | %s | %s | %s |" % (m, g, fmt(median(main_data[(base, 16)])), fmt(median(v)),
                                                            per_seed(v)))
    if rows:
        out += ["### NAdam with weight prediction at P = 16", "",
                "| method | gamma | without prediction | with prediction | per seed |", "|---|---|---|---|---|"] + \
            rows + [""]
    # NAdam's beta1 (0.99 in the main runs), and prediction with gamma = 0 on top of beta1 0.995.
    betas = [(b, main_data if b == "0.99" else collect(d, "mlp-nadambeta-%s." % b))
             for b in ["0.98", "0.99", "0.995", "0.999"]]
    betas = [(b, data) for b, data in betas if data and ("nesterov", 16) in data]
    if betas:
        best = min(median(data[("nesterov", 16)]) for _, data in betas)
        lines = ["| method | beta1 | P = 1 | P = 16 | slowdown P=16 | % fewer than the best NAdam at P=16 | per seed at 16 |",
                 "|---|---|---|---|---|---|---|"]
        lines += p16_rows(([m, b], data, m, [lambda t16: pct(t16, best)])
                          for m in ["nesterov", "rot-cov-bi+nesterov"] for b, data in betas)
        m = "rot-cov-bi+nesterov+weight-pred"
        for b, name, p1 in [("0.99", "mlp-nadam-wp0.", "mlp-nadam-wp0-p1."), ("0.995", "mlp-nadam-wp0-beta0.995.", None)]:
            wp = collect(d, name)
            if wp and (m, 16) in wp:
                t16 = median(wp[(m, 16)])
                one = collect(d, p1) if p1 else {}
                t1 = median(one[(m, 1)]) if (m, 1) in one else None
                lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                    gamma0_label(m), b, fmt(t1) if t1 else "", fmt(t16), slowdown(t1, t16) if t1 else "",
                    pct(t16, best),
                    per_seed(wp[(m, 16)])))
        out += ["### NAdam's beta1 at P = 16", "", "\n".join(lines), ""]
    # Adam's beta1 (0.9 in the main runs).
    rows = p16_rows(([m, b], main_data if b == "0.9" else collect(d, "mlp-adambeta-%s." % b), m)
                    for m in ["adam", "rot-cov-bi"] for b in ["0.9", "0.95", "0.99"])
    if len(rows) > 2:
        out += ["### Adam's beta1 at P = 16", "", "| method | beta1 | P = 1 | P = 16 | slowdown P=16 | per seed at 16 |",
                "|---|---|---|---|---|---|"] + rows + [""]
    # beta2 of Adam and NAdam (0.999 in the main runs; the rotated methods' L, R EMA follows it).
    b2s, b2methods = ["0.999", "0.99", "0.95"], ["adam", "nesterov", "rot-cov-bi", "rot-cov-bi+nesterov"]
    grid = knob_grid(b2methods, b2s,
                     lambda m, b: main_data if b == "0.999" else collect(d, "mlp-beta2-%s-%s." % (b, m)))
    if any(b != "0.999" for (_, b) in grid):
        t = psi_table(grid, b2s, b2methods, ["adam", "nesterov"], "% fewer than the best coordinate method, β₂ tuned",
                      knob="β₂")
        out += ["### beta2 at P = 16 (median iterations)", "", t, ""]
        rows = p16_rows(([m], collect(d, "mlp-beta2-0.95-basis0.999-%s." % m), m)
                        for m in ["rot-cov-bi", "rot-cov-bi+nesterov"])
        if rows:
            out += ["β₂ = 0.95 with the L, R EMA factor kept at 0.999 (`--basis-beta 0.999`):", "",
                    "| method | P = 1 | P = 16 | slowdown P=16 | per seed at 16 |", "|---|---|---|---|---|"] + rows + [""]
    # SGD with momentum (PipeDream's optimizer) against the main runs' best coordinate method.
    rows = p16_rows(([m], collect(d, "mlp-sgd-%s." % m), m) for m in ["sgd", "sgd+weight-pred"])
    if rows:
        best16 = min(median(main_data[(m, 16)]) for m in COORD if (m, 16) in main_data)
        out += ["### SGD with momentum at P = 16 (median iterations; the main runs' best coordinate method: %s)"
                % fmt(best16), "", "| method | P = 1 | P = 16 | slowdown P=16 | per seed at 16 |",
                "|---|---|---|---|---|"] + rows + [""]
    # Gradient clipping per stage (off in the main runs); "% fewer" with the clip tuned for every method.
    clips, cmethods = ["0", "0.3", "1", "3"], ["adam", "nesterov", "rot-cov-bi", "rot-cov-bi+nesterov"]
    grid = knob_grid(cmethods, clips, lambda m, c: main_data if c == "0" else collect(d, "mlp-clip-%s-%s." % (c, m)))
    if any(c != "0" for (_, c) in grid):
        t = psi_table(grid, clips, cmethods, ["adam", "nesterov"],
                      "% fewer than the best coordinate method, clip tuned", knob="clip")
        out += ["### Gradient clipping at P = 16 (median iterations; clip 0: off)", "", t, ""]
        rows = p16_rows(([gamma0_label(m)], collect(d, "mlp-clip-1-wp0-%s." % m), m)
                        for m in ["nesterov+weight-pred", "rot-cov-bi+nesterov+weight-pred"])
        if rows:
            out += ["With prediction from the last step, clip 1:", "",
                    "| method | P = 1 | P = 16 | slowdown P=16 | per seed at 16 |", "|---|---|---|---|---|"] + rows + [""]
    # Clip and beta2 tuned jointly, for NAdam and the best combination (NAdam in the basis with
    # prediction from the last step); "clip/beta2" labels the grid's points.
    joint = {("nesterov", "0/0.999"): main_data,
             ("nesterov", "0/0.99"): collect(d, "mlp-beta2-0.99-nesterov."),
             ("nesterov", "0/0.95"): collect(d, "mlp-beta2-0.95-nesterov."),
             ("nesterov", "1/0.999"): collect(d, "mlp-clip-1-nesterov."),
             ("rot-cov-bi+nesterov+weight-pred", "0/0.999"): collect(d, "mlp-wp0-rot-cov-bi+nesterov+weight-pred."),
             ("rot-cov-bi+nesterov+weight-pred", "1/0.999"): collect(d, "mlp-clip-1-wp0-rot-cov-bi+nesterov+weight-pred.")}
    points = ["0/0.999", "0/0.99", "0/0.95", "1/0.999", "1/0.99", "1/0.95"]
    jmethods = ["nesterov", "rot-cov-bi+nesterov+weight-pred"]
    grid = knob_grid(jmethods, points, lambda m, p: joint.get((m, p)) or collect(
        d, "mlp-clipbeta2-%s-%s-%s." % (*p.split("/"), m)), need_p1=True)
    if any(p.endswith(("0.99", "0.95")) for (m, p) in grid if m != "nesterov"):
        t = psi_table(grid, points, jmethods, ["nesterov"], "% fewer than NAdam, both tuned", knob="clip/β₂")
        out += ["### Clip and beta2 tuned together at P = 16 (median iterations; γ = 0 for the prediction)", "", t, ""]
    # The input covariance's condition number kappa (100 in the main runs): the problem, not a knob, so
    # every method is compared with the best coordinate method at the same kappa.
    rows = []
    for k in ["10", "100", "1000"]:
        data = main_data if k == "100" else {
            key: v for m in cmethods for key, v in collect(d, "mlp-kappa-%s-%s." % (k, m)).items()}
        best = min([median(data[(m, 16)]) for m in ["adam", "nesterov"] if (m, 16) in data] or [INF])
        rows += p16_rows(([k, m], data, m, [lambda t, m=m, best=best: "—" if m in COORD else pct(t, best)])
                         for m in cmethods)
    if any(r.startswith("| 10 ") or r.startswith("| 1000 ") for r in rows):
        out += ["### The input covariance's condition number at P = 16 (median iterations)", "",
                "| κ | method | P = 1 | P = 16 | slowdown P=16 | % fewer than the best coordinate method | per seed at 16 |",
                "|---|---|---|---|---|---|---|"] + rows + [""]
    # NAdam's look-ahead schedule psi: torch's 0.004 (the runs above) and the mlp-psi-* grid, for the
    # four NAdam methods; "% fewer" against the best coordinate method with psi tuned as well.
    psis = ["0.004", "0.008", "0.016", "0.032", "0.064", "0.128"]
    default = {"nesterov": main_data, "rot-cov-bi+nesterov": main_data,
               "nesterov+weight-pred": collect(d, "mlp-nadam-wp0."),
               "rot-cov-bi+nesterov+weight-pred": collect(d, "mlp-wp0-rot-cov-bi+nesterov+weight-pred.")}
    grid = knob_grid(default, psis, lambda m, p: default[m] if p == "0.004" else collect(d, "mlp-psi-%s-%s." % (p, m)))
    if any(p != "0.004" for (_, p) in grid):
        t = psi_table(grid, psis, list(default), ["nesterov", "nesterov+weight-pred"],
                      "% fewer than the best coordinate method, ψ tuned")
        out += ["### NAdam's look-ahead schedule psi at P = 16 (median iterations)", "", t, ""]
    # P = 1 ... 16 for each NAdam method at its best psi (mlp-psicurve-*).
    curve, labels = {}, {}
    for m, p in [("nesterov", "0.016"), ("nesterov+weight-pred", "0.064"), ("rot-cov-bi+nesterov", "0.032"),
                 ("rot-cov-bi+nesterov+weight-pred", "0.064")]:
        label = "%s (ψ = %s)" % (gamma0_label(m) if m.endswith("weight-pred") else m, p)
        for (mm, P), v in collect(d, "mlp-psicurve-%s." % m).items():
            curve[(label, P)] = v
            labels[label] = m
    if curve:
        t, _, _ = table(curve, list(labels), [1, 2, 4, 8, 16], 16000,
                        coord=[lab for lab, m in labels.items() if not m.startswith("rot")])
        out += ["### P = 1 ... 16 with each NAdam method at its best psi", "", t, ""]
    # The same at P = 32 (32 layers, one job per seed): torch's psi (mlp-l32wp0-*) and mlp-l32psi-*.
    t = psi32_table(d, psis, lambda p, m: ["mlp-l32wp0-%s-s" % m if p == "0.004" else "mlp-l32psi-%s-%s-s" % (p, m)],
                    50000)
    if t:
        out += ["### NAdam's look-ahead schedule psi at P = 32 (32 layers)", "", t, ""]
    # P = 32 at batch 8: torch's psi (mlp-l32b8wp0-*, P = 1 and 32) and mlp-l32b8psi-* (P = 32 only;
    # P = 1 from mlp-l32b8psi1-* where it was run).
    t = psi32_table(d, ["0", "0.0005", "0.001", "0.002", "0.004", "0.008"],
                    lambda p, m: ["mlp-l32b8wp0-%s." % m] if p == "0.004" else
                    ["mlp-l32b8psi-%s-%s-s" % (p, m), "mlp-l32b8psi1-%s-%s-s" % (p, m)], 100000)
    if t:
        out += ["### NAdam's look-ahead schedule psi at P = 32, batch 8", "", t, ""]
    # Batch 4: torch's psi (mlp-b4-*) and mlp-b4psi-*, NAdam with and without rotation.
    b4psis = ["0.004", "0.008", "0.016", "0.032"]
    b4 = knob_grid(["nesterov", "rot-cov-bi+nesterov"], b4psis,
                   lambda m, p: collect(d, ("mlp-b4-%s." % m) if p == "0.004" else ("mlp-b4psi-%s-%s." % (p, m))),
                   need_p1=True)
    if any(p != "0.004" for (_, p) in b4) and any(m == "nesterov" for (m, _) in b4):
        t = psi_table(b4, b4psis, ["nesterov", "rot-cov-bi+nesterov"], ["nesterov"], "% fewer than NAdam at its best ψ")
        out += ["### NAdam's look-ahead schedule psi at P = 16, batch 4 (median iterations)", "", t, ""]
    out += torch_oracle(d)
    rows = []
    scale_docs = [load(d, name) for name in json_names(d, "mlp-scale-")]
    if scale_docs:
        # The headline setting (teacher 1, init 0.5), seed 1 of the main runs, for reference.
        main_seed1 = [r for m in ["adam", "nesterov", "rot-cov-bi", "rot-cov-bi+nesterov"]
                      for r in (load(d, "mlp-main-" + m) or {"records": []})["records"] if r["seed"] == 1]
        scale_docs.append({"teacher_scale": 1.0, "init_scale": 0.5, "records": main_seed1})
    for doc in sorted(scale_docs, key=lambda doc: (doc["teacher_scale"], doc["init_scale"])):
        data = {}
        for r in doc["records"]:
            data.setdefault((r["method"], r["stages"]), []).append(r["iters_to_target"])
        cells = []
        for m in ["adam", "nesterov", "rot-cov-bi", "rot-cov-bi+nesterov"]:
            cells.append("%s / %s" % (fmt(median(data[(m, 1)])), fmt(median(data[(m, 16)]))) if (m, 16) in data
                         else "")
        n16 = median(data[("nesterov", 16)]) if ("nesterov", 16) in data else INF
        pcts = [pct(median(data[(m, 16)]), n16) if (m, 16) in data and n16 < INF else ""
                for m in ["rot-cov-bi", "rot-cov-bi+nesterov"]]
        rows.append("| %g | %g | %s | %s |" % (doc["teacher_scale"], doc["init_scale"], " | ".join(cells),
                                              " | ".join(pcts)))
    if rows:
        out += ["### Problem scales (seed 1): iterations at P = 1 / P = 16", "",
                "| teacher | init | adam | nesterov | rot-cov-bi | rot-cov-bi+nesterov | rot-cov-bi: % fewer than "
                "nesterov at 16 | rot-cov-bi+nesterov: % fewer than nesterov at 16 |", "|---|---|---|---|---|---|---|---|"] + rows + [""]
    for prob in ["quadratic", "kron"]:
        for name in ["%s-noise0" % prob, "%s-noise1" % prob, "%s-iso" % prob]:
            data = collect(d, name + ".")
            if not data:
                continue
            doc = load(d, name)
            methods = sorted({m for (m, _) in data}, key=lambda m: (m not in COORD, m))
            t, _, _ = table(data, methods, [0, 4, 16, 32], 20000, "τ")
            shape = "isotropic noise" if doc.get("noise_shape") == "isotropic" else "Hessian-shaped noise"
            noise = doc.get("noise", 1 if name.endswith("noise1") else 0)
            label = "no noise" if noise == 0 else "%s %g" % (shape, noise)
            out += ["### %s, %s (median of 3 seeds, target 1e-2)" % (prob, label), "", t, ""]
    for name in ["probe-kron", "probe-mlp"]:
        doc = load(d, name)
        if doc and "probe" in doc:
            b = statistics.median(p["before"] for p in doc["probe"])
            a = statistics.median(p["after"] for p in doc["probe"])
            out.append("- %s: ||H||_{1,1} / tr H = %.2f in the coordinates, %.2f after rotation (median of %d seeds)"
                       % (name, b, a, len(doc["probe"])))
            if all("exact_after" in p for p in doc["probe"]):
                out.append("  - exact: %.2f in the coordinates, %.3f in the factors' eigenbasis, %.3f in the eigenbasis "
                           "of H's partial traces (medians)"
                           % tuple(statistics.median(p[k] for p in doc["probe"])
                                   for k in ["exact_before", "exact_after", "exact_partial_trace"]))
            for at in ["init", "teacher"]:
                if all(at in p for p in doc["probe"]):
                    med = {k: statistics.median(p[at][k] for p in doc["probe"]) for k in doc["probe"][0][at]}
                    out.append("  - %s, exact: %.2f in the coordinates, %s%.2f in the eigenbasis of H's partial traces; "
                               "eigenvalues from %.3g to %.3g (medians)"
                               % (at, med["coords"], "%.2f in the L/R eigenbasis, " % med["lr_basis"]
                                  if "lr_basis" in med else "", med["partial_trace"], med["min_eig"], med["max_eig"]))
    print("\n".join(out))


if __name__ == "__main__":
    main()
