#!/usr/bin/python3
"""Writes tests/data/quad__nadam*.json: torch.optim.NAdam trajectories on the `quad` problem of
problems.json, in the optref-v1 format of the other run files (read by tools/reference.hpp).

Needs Debian's python3-torch (1.13.1). torch 1.13 computes the second bias-correction product as
mu_product * mu * mu_next, i.e. with mu_t twice; later torch releases and torch's documented
algorithm use prod_{i<=t+1} mu_i = mu_product * mu_next. This script runs torch 1.13's own
_single_tensor_nadam with only that expression replaced (the patch is checked to apply), so the
files follow the documented algorithm that delayopt implements.

    /usr/bin/python3 tests/data/make_nadam_reference.py   # from the repository root
"""
import inspect
import json
import os
import platform
import sys

import numpy as np
import torch
import torch.optim.nadam as nadam_module

HERE = os.path.dirname(os.path.abspath(__file__))
OLD = "mu_product_next = mu_product * mu * mu_next"
NEW = "mu_product_next = mu_product * mu_next"


def patch_torch_nadam():
    src = inspect.getsource(nadam_module._single_tensor_nadam)
    if OLD not in src:
        if NEW in src:
            return "unpatched (this torch already uses mu_product * mu_next)"
        sys.exit("torch's _single_tensor_nadam has neither form of mu_product_next; update this script")
    ns = dict(nadam_module.__dict__)
    exec(src.replace(OLD, NEW), ns)
    nadam_module._single_tensor_nadam = ns["_single_tensor_nadam"]
    return f"torch {torch.__version__} _single_tensor_nadam with '{OLD}' -> '{NEW}'"


def flat(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def run(name, steps, hyper, problems):
    quad = problems["problems"]["quad"]
    names = problems["param_names"]
    shapes = problems["param_shapes"]
    A = {k: torch.tensor(quad["A"][k]["data"]).reshape(quad["A"][k]["shape"]) for k in names}
    params = [torch.tensor(quad["x0"][k]).reshape(shapes[k]).clone().requires_grad_(False) for k in names]
    opt = torch.optim.NAdam(params, foreach=False, **hyper)

    def loss_and_grads():
        loss = 0.0
        grads = []
        for k, p in zip(names, params):
            x = p.reshape(-1)
            ax = A[k] @ x
            loss += 0.5 * float(x @ ax)
            grads.append(ax.reshape(shapes[k]))
        return loss, grads

    trajectory, first = [], []
    for c in range(1, steps + 1):
        loss, grads = loss_and_grads()
        for p, g in zip(params, grads):
            p.grad = g.clone()
        if c <= 3:
            first.append({"call": c, "grad": {k: flat(g) for k, g in zip(names, grads)}})
        opt.step()
        trajectory.append({"call": c, "loss_before": loss, "params": {k: flat(p) for k, p in zip(names, params)}})
    final = {}
    for k, p in zip(names, params):
        st = opt.state[p]
        final[k] = {"step": int(st["step"].item()), "exp_avg": flat(st["exp_avg"]),
                    "exp_avg_sq": flat(st["exp_avg_sq"]), "mu_product": float(st["mu_product"].item())}
    return {"format": "optref-v1", "name": name, "problem": "quad", "problems_file": "problems.json",
            "dtype": "float64", "layout": "row-major (C order)",
            "optimizer": {"impl": "torch.optim.NAdam(foreach=False)", "hyperparams": hyper},
            "env": {"torch_version": torch.__version__, "numpy_version": np.__version__,
                    "python": platform.python_version(), "torch_num_threads": 1, "default_dtype": "float64",
                    "generator": "make_nadam_reference.py", "patch": PATCH},
            "param_names": names, "param_shapes": shapes, "steps": steps,
            "initial": {k: quad["x0"][k] for k in names}, "grads_first_calls": first,
            "trajectory": trajectory, "final_state": final}


if __name__ == "__main__":
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    PATCH = patch_torch_nadam()
    with open(os.path.join(HERE, "problems.json")) as f:
        problems = json.load(f)
    # 150 steps: the loop over mu_i in moment::NAdam stops early (product < 2^-54) after ~55.
    runs = [("quad__nadam", 150, {"lr": 1e-2, "betas": (0.99, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                                  "momentum_decay": 4e-3}),
            ("quad__nadam_l2", 50, {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2,
                                    "momentum_decay": 4e-2})]
    for name, steps, hyper in runs:
        out = run(name, steps, hyper, problems)
        with open(os.path.join(HERE, name + ".json"), "w") as f:
            json.dump(out, f, separators=(",", ":"))
        print("wrote", name + ".json")
