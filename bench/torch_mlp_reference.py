#!/usr/bin/python3
"""An independent PyTorch implementation of the headline experiment of docs/convergence.md (the
pipelined residual MLP of `delayopt_convergence --problem mlp`): an oracle for that harness.

It shares no code with delayopt: the network and its gradient by torch autograd, its own delay
simulation with weight stashing, torch.optim.Adam and torch.optim.NAdam for the coordinate
baselines, and the basis-rotation paper's Algorithm 1 (arXiv 2602.03515; docs/policies.md) written
out in torch for `rot-cov-bi` and for NAdam in that basis (`rot-cov-bi+nesterov`); each of them
also with PipeMare's weight prediction (`<base>+weight-pred`, `--wp-gamma`). The problem, the delay
model, the target and the learning-rate search follow docs/convergence.md.

  --rng delayopt (default)  the C++ program's random draws (std::mt19937 and libstdc++'s normal
                            distribution, re-implemented here): the same instances and minibatches,
                            so the iteration counts must agree run for run (--check-against).
  --rng torch               torch's generator: other instances of the same distribution.

NAdam runs with foreach=True: torch 1.13's default single-tensor NAdam multiplies mu_t into the
second bias-correction product twice (mu_product * mu * mu_next); the foreach path and later
torch releases use mu_product * mu_next, as delayopt does.

Run (from the repository root; Debian's /usr/bin/python3 has python3-torch):

    /usr/bin/python3 bench/torch_mlp_reference.py --seeds 1,2,3 --stages 1,16 \
        --methods adam,nesterov,rot-cov-bi,rot-cov-bi+nesterov --json ref.json

The JSON has delayopt_convergence's record format (sec_per_step null).
"""
import argparse
import json
import math
import statistics
import sys
import time

import numpy as np
import torch

DTYPE = torch.float64


# ---- the problem ------------------------------------------------------------------------------


class StdNormal:
    """std::normal_distribution<double> on std::mt19937(seed) as libstdc++ draws them (Marsaglia's
    polar method on generate_canonical<double, 53>), a fresh distribution per call: the draws of
    delayopt_convergence built with g++, so both programs see the same problem instances and
    minibatches."""

    def __init__(self, seed):
        key = [seed & 0xFFFFFFFF]
        for i in range(1, 624):  # std::mt19937's seeding recurrence
            key.append((1812433253 * (key[-1] ^ (key[-1] >> 30)) + i) & 0xFFFFFFFF)
        self._bits = np.random.MT19937()
        self._bits.state = {"bit_generator": "MT19937", "state": {"key": np.array(key, dtype=np.uint32), "pos": 624}}
        self._raw = np.zeros(0)  # drawn 32-bit words not used yet

    def normals(self, count):
        pairs, out = (count + 1) // 2, []
        while pairs > 0:
            need = 4 * (pairs + pairs // 2 + 16)  # 4 words per candidate pair; ~21% are rejected
            if self._raw.size < need:
                self._raw = np.concatenate([self._raw, self._bits.random_raw(need).astype(np.float64)])
            w = self._raw[: self._raw.size // 4 * 4].reshape(-1, 4)
            u = np.minimum((w[:, 0::2] + w[:, 1::2] * 2.0**32) / 2.0**64, np.nextafter(1.0, 0.0))
            x, y = 2.0 * u[:, 0] - 1.0, 2.0 * u[:, 1] - 1.0
            r2 = x * x + y * y
            idx = np.flatnonzero((r2 <= 1.0) & (r2 != 0.0))[:pairs]
            # glibc's log, as std::log: numpy's own (SIMD) log differs in the last bit for ~20% of inputs.
            log_r2 = np.fromiter(map(math.log, r2[idx]), dtype=np.float64, count=idx.size)
            mult = np.sqrt(-2.0 * log_r2 / r2[idx])
            out.append(np.stack([y[idx] * mult, x[idx] * mult], axis=1).ravel())
            self._raw = self._raw[4 * ((idx[-1] + 1) if idx.size else w.shape[0]):]
            pairs -= idx.size
        return np.concatenate(out)[:count]


class Mlp:
    """h <- h + 0.5 tanh(W_l h), l = 0..L-1; loss 1/(2B) ||h_L - y||^2 against a teacher of the same
    architecture; inputs x = S^1/2 z, S rotated, eigenvalues log-spaced over kappa, mean 1."""

    def __init__(self, seed, layers=16, width=24, batch=32, kappa=100.0, teacher_scale=1.0,
                 init_scale=0.5, holdout=512, rng="delayopt"):
        self.layers, self.width, self.batch = layers, width, batch
        n = width
        if rng == "delayopt":  # delayopt_convergence's draws: std::mt19937 + libstdc++'s normals
            gen, self._stream = StdNormal(seed), StdNormal((seed * 7919 + 17) & 0xFFFFFFFF)
            self._randn = lambda g, *shape: torch.from_numpy(g.normals(math.prod(shape)).reshape(shape))
        else:
            gen, self._stream = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed * 7919 + 17)
            self._randn = lambda g, *shape: torch.randn(*shape, generator=g, dtype=DTYPE)
        q, r = torch.linalg.qr(self._randn(gen, n, n))
        u = q * torch.sign(torch.diagonal(r))  # Haar; the column signs do not change S
        spec = kappa ** (-torch.arange(n, dtype=DTYPE) / max(n - 1, 1))
        spec *= n / spec.sum()
        self.input_half = u @ torch.diag(spec.sqrt()) @ u.T
        w = self._randn(gen, 2 * layers, n, n) / math.sqrt(n)  # one distribution for both, as in C++
        self.teacher, self.init = w[:layers] * teacher_scale, w[layers:] * init_scale
        self.x_held = self.inputs(holdout, gen)
        self.y_held = self.forward(self.teacher, self.x_held)
        # One minibatch stream per seed, shared by every method and learning rate.
        self._batches = []

    def inputs(self, count, gen):
        return self.input_half @ self._randn(gen, self.width, count)

    @staticmethod
    def forward(w, h):
        for wl in w.unbind(0):
            h = h + 0.5 * torch.tanh(wl @ h)
        return h

    def minibatch(self, k):
        while len(self._batches) <= k:
            x = self.inputs(self.batch, self._stream)
            self._batches.append((x, self.forward(self.teacher, x)))
        return self._batches[k]

    @classmethod
    def gradient(cls, w, x, y):
        """d/dw of the minibatch loss 1/(2B) ||forward(w, x) - y||^2 (w is not modified)."""
        w = w.detach().requires_grad_(True)
        d = cls.forward(w, x) - y
        (g,) = torch.autograd.grad(0.5 * d.square().sum() / x.shape[1], w)
        return g

    def held_loss(self, w):
        d = self.forward(w, self.x_held) - self.y_held
        return 0.5 * float(d.square().sum()) / self.x_held.shape[1]


# ---- optimizers -------------------------------------------------------------------------------


class RotatedAdam:
    """Adam (or torch's NAdam) in the eigenbasis of L = EMA(G G^T), R = EMA(G^T G), per layer, for a
    stack of square layers W (L x n x n). The paper's Algorithm 1: accumulate L, R with the current
    gradient, refresh (cold: eigh, descending; warm every `refresh` steps: re-sort by the Rayleigh
    quotients, permute the second moment with the columns, one power iteration + QR), then rotate;
    the first moment lives in the original space and is rotated every step, the second in the
    rotated space; eps after the square root; Adam's bias correction folded into the step."""

    def __init__(self, w, lr, nadam=False, beta1=None, beta2=0.999, eps=1e-8, refresh=10, psi=0.004):
        self.w, self.lr, self.nadam = w, lr, nadam
        self.beta1 = beta1 if beta1 is not None else (0.99 if nadam else 0.9)
        self.beta2, self.eps, self.refresh, self.psi = beta2, eps, refresh, psi
        self.t, self.mu_product = 0, 1.0
        z = torch.zeros_like(w)
        self.lf, self.rf, self.m, self.v = z.clone(), z.clone(), z.clone(), z.clone()
        self.ql = self.qr = None

    def _warm(self, q, f, side):
        est = torch.diagonal(q.transpose(1, 2) @ f @ q, dim1=1, dim2=2)
        order = torch.argsort(est, dim=1, descending=True)
        n = q.shape[1]
        q = torch.gather(q, 2, order[:, None, :].expand(-1, n, -1))
        if side == 0:
            self.v = torch.gather(self.v, 1, order[:, :, None].expand(-1, -1, n))
        else:
            self.v = torch.gather(self.v, 2, order[:, None, :].expand(-1, n, -1))
        return torch.linalg.qr(f @ q).Q

    @staticmethod
    def _cold(f):
        eye = torch.eye(f.shape[1], dtype=f.dtype)
        _, vecs = torch.linalg.eigh(f + 1e-30 * eye)
        return torch.flip(vecs, dims=[2])

    @torch.no_grad()
    def step(self, g):
        self.t += 1
        t, b1, b2 = self.t, self.beta1, self.beta2
        self.lf.lerp_(g @ g.transpose(1, 2), 1 - b2)
        self.rf.lerp_(g.transpose(1, 2) @ g, 1 - b2)
        if self.ql is None:
            self.ql, self.qr = self._cold(self.lf), self._cold(self.rf)
        elif t % self.refresh == 0:
            self.ql = self._warm(self.ql, self.lf, 0)
            self.qr = self._warm(self.qr, self.rf, 1)
        qlt = self.ql.transpose(1, 2)
        gr = qlt @ g @ self.qr
        self.m.lerp_(g, 1 - b1)
        mr = qlt @ self.m @ self.qr
        self.v.mul_(b2).addcmul_(gr, gr, value=1 - b2)
        if self.nadam:  # torch.optim.NAdam's update, on the rotated coordinates
            mu = b1 * (1 - 0.5 * 0.96 ** (t * self.psi))
            mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * self.psi))
            self.mu_product *= mu
            denom = (self.v / (1 - b2**t)).sqrt() + self.eps
            d = (1 - mu) / (1 - self.mu_product) * gr / denom
            d += mu_next / (1 - self.mu_product * mu_next) * mr / denom
            d *= self.lr
        else:
            d = self.lr * math.sqrt(1 - b2**t) / (1 - b1**t) * mr / (self.v.sqrt() + self.eps)
        self.w -= self.ql @ d @ self.qr.transpose(1, 2)


class TorchOptimizer:
    """torch.optim.Adam / NAdam on the stack of layers."""

    def __init__(self, w, opt):
        self.w, self.opt = w, opt

    def step(self, g):
        self.w.grad = g
        self.opt.step()


BASES = ("adam", "nesterov", "rot-cov-bi", "rot-cov-bi+nesterov")
# <base>+weight-pred (weight-pred alone: Adam's): PipeMare's weight prediction (--wp-gamma).
METHODS = BASES + ("weight-pred", "nesterov+weight-pred", "rot-cov-bi+weight-pred", "rot-cov-bi+nesterov+weight-pred")


def base_of(name):
    """(the optimizer's name, whether it predicts weights)."""
    if name == "weight-pred":
        return "adam", True
    return name.removesuffix("+weight-pred"), name.endswith("+weight-pred")


def make_method(name, w, lr):
    if name == "adam":
        return TorchOptimizer(w, torch.optim.Adam([w], lr=lr, betas=(0.9, 0.999), eps=1e-8))
    if name == "nesterov":
        return TorchOptimizer(w, torch.optim.NAdam([w], lr=lr, betas=(0.99, 0.999), eps=1e-8,
                                                   momentum_decay=0.004, foreach=True))
    if name == "rot-cov-bi":
        return RotatedAdam(w, lr)
    if name == "rot-cov-bi+nesterov":
        return RotatedAdam(w, lr, nadam=True)
    raise ValueError(name)


# ---- the pipeline -----------------------------------------------------------------------------


def run(mlp, method, lr, stages, limit, target, eval_every=25, wp_gamma=0.9, per_stage=False):
    """Iterations to held-out loss <= target * initial (None if not within `limit`), final f/f0.
    Stage s holds layers [s L / P, (s + 1) L / P) and sees delay tau_s = P - 1 - s: the gradient of
    step t is taken (forward and backward: weight stashing) in a network whose stage-s layers are
    their version after t - 1 - tau_s updates (the initial weights before that), and every stage
    applies its part to its current weights. With weight prediction (PipeMare) the stored version
    is extrapolated tau_s steps ahead along the EMA u <- g u + (1 - g)(w_new - w_old) of the weight
    change: the forward and backward run on where the weights will be when the gradient lands.
    per_stage (not the issue's model; a probe of how much the model matters): stage s's gradient is
    taken in the whole network at its version after t - 1 - tau_s updates, one pass per stage."""
    L = mlp.layers
    tau = torch.tensor([stages - 1 - (l * stages) // L for l in range(L)])
    layer_ids = torch.arange(L)
    w = mlp.init.clone().requires_grad_(False)
    ring = mlp.init.expand(stages, -1, -1, -1).clone()  # slot j % P: the weights after j updates
    base, predicts = base_of(method)
    opt = make_method(base, w, lr)
    velocity = torch.zeros_like(w)
    ahead = tau.to(DTYPE)[:, None, None]
    f0 = mlp.held_loss(w)
    rel = 1.0
    for it in range(1, limit + 1):
        x, y = mlp.minibatch(it - 1)
        if per_stage:
            g = torch.empty_like(w)
            for delay in range(stages):
                on_stage = tau == delay
                g[on_stage] = mlp.gradient(ring[(it - 1 - delay) % stages], x, y)[on_stage]
        else:
            g = mlp.gradient(ring[(it - 1 - tau) % stages, layer_ids], x, y)
        before = w.clone() if predicts else None
        opt.step(g)
        if predicts:
            velocity.mul_(wp_gamma).add_(w - before, alpha=1 - wp_gamma)
            ring[it % stages] = w + ahead * velocity
        else:
            ring[it % stages] = w
        if it % eval_every == 0 or it == limit:
            rel = mlp.held_loss(w) / f0
            if rel <= target:
                return it, rel
            if not math.isfinite(rel) or rel > 1e3:
                break
    return None, rel


def search(mlp, method, stages, start, grid, max_iters, target, eval_every=25, **options):
    """delayopt_convergence's outward search: from grid[start], each direction while it improves,
    giving up after two misses in a row; a run must beat the best so far by one evaluation."""
    best = {"iters": None, "rel": math.inf, "i": start}
    tried = set()

    def attempt(i):
        tried.add(i)
        limit = best["iters"] - eval_every if best["iters"] else max_iters
        if limit < 1:
            return False
        iters, rel = run(mlp, method, grid[i], stages, limit, target, eval_every, **options)
        better = (len(tried) == 1 or (iters and (not best["iters"] or iters < best["iters"]))
                  or (not iters and not best["iters"] and rel < best["rel"]))
        if better:
            best.update(iters=iters, rel=rel, i=i)
        return better

    attempt(start)
    for direction in (+1, -1):
        misses, i = 0, best["i"] + direction
        while 0 <= i < len(grid) and misses < 2:
            if i not in tried:
                misses = 0 if attempt(i) else misses + 1
            i += direction
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problem", choices=["mlp"], default="mlp", help="only mlp (delayopt_convergence's name)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    ap.add_argument("--stages", default="1,16", help="pipeline depths P; stage s sees delay P-1-s")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--width", type=int, default=24)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-iters", type=int, default=16000, help="give up after this many steps")
    ap.add_argument("--target", type=float, default=0.05, help="relative held-out loss to reach")
    ap.add_argument("--wp-gamma", type=float, default=0.9,
                    help="weight prediction: EMA factor of the weight velocity, in [0, 1)")
    ap.add_argument("--delay-model", choices=["stashed", "per-stage"], default="stashed",
                    help="stashed: the issue's (and delayopt_convergence's) model, one network with each stage at "
                         "its own stale version; per-stage: each stage's gradient from the whole network at that "
                         "stage's stale version (P passes per step)")
    ap.add_argument("--rng", choices=["delayopt", "torch"], default="delayopt",
                    help="delayopt: the same instances and minibatches as delayopt_convergence (g++ builds); "
                         "torch: torch's generator, independent draws of the same distribution")
    ap.add_argument("--lr-grid", help="comma-separated rates (default: quarter decades 1e-4 ... 1e-1)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--json", help="write {\"records\": [...]} here")
    ap.add_argument("--check-against", metavar="FILE",
                    help="a delayopt_convergence --json file of the same runs (--rng delayopt): exit 1 unless "
                         "every record has the same iterations and rate and a final loss within --rtol")
    ap.add_argument("--rtol", type=float, default=1e-6, help="--check-against: relative tolerance of final_loss")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.lr_grid:
        grid = sorted(float(x) for x in a.lr_grid.split(","))
        first = len(grid) // 2
    else:  # delayopt_convergence's grid: quarter decades 1e-4 ... 1e-1, the first search from 10^-2.5
        grid, first = [1e-4 * 10 ** (k / 4) for k in range(13)], 6
    stages = [int(s) for s in a.stages.split(",")]
    if any(lr <= 0 for lr in grid) or a.max_iters < 1 or not 0 < a.target < 1:
        raise SystemExit("torch_mlp_reference: --lr-grid needs positive rates, --max-iters >= 1, --target in (0, 1)")
    if a.check_against and a.rng != "delayopt":
        raise SystemExit("torch_mlp_reference: --check-against compares run for run, which needs --rng delayopt")
    if not 0 <= a.wp_gamma < 1:
        raise SystemExit(f"torch_mlp_reference: --wp-gamma {a.wp_gamma} must be in [0, 1)")
    for m in a.methods.split(","):
        if m not in METHODS:
            raise SystemExit(f"torch_mlp_reference: unknown method {m!r} (one of {', '.join(METHODS)})")
    for p in stages:
        if not 1 <= p <= a.layers:
            raise SystemExit(f"torch_mlp_reference: --stages {p} must be in [1, --layers {a.layers}]")
    records = []
    print(f"{'method':<22} {'stages':>6} {'seed':>5} {'iters':>8} {'best lr':>9} {'f/f0':>8} {'s':>6}")
    for method in a.methods.split(","):
        for seed in (int(s) for s in a.seeds.split(",")):
            mlp, start = Mlp(seed, layers=a.layers, width=a.width, batch=a.batch, rng=a.rng), first
            for p in stages:
                t0 = time.perf_counter()
                best = search(mlp, method, p, start, grid, a.max_iters, a.target, wp_gamma=a.wp_gamma,
                              per_stage=a.delay_model == "per-stage")
                start = best["i"]
                rec = {"method": method, "stages": p, "seed": seed, "iters_to_target": best["iters"],
                       "lr": grid[best["i"]], "final_loss": best["rel"], "sec_per_step": None}
                records.append(rec)
                print(f"{method:<22} {p:>6} {seed:>5} {str(best['iters'] or '-'):>8} {rec['lr']:>9.3g} "
                      f"{best['rel']:>8.4f} {time.perf_counter() - t0:>6.0f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            argv = sys.argv[1:]
            if "--json" in argv:  # where the file went is not part of what produced it
                del argv[argv.index("--json"):argv.index("--json") + 2]
            json.dump({"records": records, "source": " ".join(["bench/torch_mlp_reference.py"] + argv)}, f, indent=1)
    print("\nmedian iterations (seeds):")
    for method in a.methods.split(","):
        row = []
        for p in stages:
            its = [r["iters_to_target"] for r in records if r["method"] == method and r["stages"] == p]
            row.append(statistics.median(i if i else math.inf for i in its))
        print(f"  {method:<22} " + "  ".join(f"P={p}: {m:g}" for p, m in zip(stages, row)))
    if a.check_against:
        sys.exit(check(records, a.check_against, a.rtol))


def check(records, path, rtol):
    """0 if `records` reproduce delayopt_convergence's records in `path`, else 1 (with the reasons)."""
    with open(path) as f:
        theirs = {(r["method"], r["stages"], r["seed"]): r for r in json.load(f)["records"]}
    bad, worst = [], 0.0
    for r in records:
        key = (r["method"], r["stages"], r["seed"])
        t = theirs.get(key)
        if t is None:
            bad.append(f"{key}: no such record in {path}")
            continue
        worst = max(worst, abs(t["final_loss"] - r["final_loss"]) / abs(t["final_loss"]))
        if (t["iters_to_target"] != r["iters_to_target"] or not math.isclose(t["lr"], r["lr"], rel_tol=1e-9)
                or not math.isclose(t["final_loss"], r["final_loss"], rel_tol=rtol)):
            bad.append(f"{key}: delayopt iters {t['iters_to_target']} lr {t['lr']:.6g} f/f0 {t['final_loss']:.12g}; "
                       f"torch iters {r['iters_to_target']} lr {r['lr']:.6g} f/f0 {r['final_loss']:.12g}")
    print(f"\ncheck against {path}: {len(records) - len(bad)} of {len(records)} records agree (rtol {rtol:g}; "
          f"largest relative difference of f/f0 {worst:.1e})")
    for b in bad:
        print("  MISMATCH " + b)
    return 1 if bad or not records else 0


if __name__ == "__main__":
    main()
