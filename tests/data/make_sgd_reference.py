#!/usr/bin/python3
"""Writes tests/data/quad__sgd_*.json: torch.optim.SGD trajectories on the `quad` problem of
problems.json, in the optref-v1 format of the other run files (read by tools/reference.hpp).

Needs Debian's python3-torch (1.13.1); torch's SGD is run unchanged.

    /usr/bin/python3 tests/data/make_sgd_reference.py   # from the repository root
"""
import json
import os
import platform

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def flat(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def run(name, steps, hyper, problems):
    quad = problems["problems"]["quad"]
    names = problems["param_names"]
    shapes = problems["param_shapes"]
    A = {k: torch.tensor(quad["A"][k]["data"]).reshape(quad["A"][k]["shape"]) for k in names}
    params = [torch.tensor(quad["x0"][k]).reshape(shapes[k]).clone() for k in names]
    opt = torch.optim.SGD(params, foreach=False, **hyper)

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
    final = {k: {"momentum_buffer": flat(opt.state[p]["momentum_buffer"])} for k, p in zip(names, params)}
    return {"format": "optref-v1", "name": name, "problem": "quad", "problems_file": "problems.json",
            "dtype": "float64", "layout": "row-major (C order)",
            "optimizer": {"impl": "torch.optim.SGD(foreach=False)", "hyperparams": hyper},
            "env": {"torch_version": torch.__version__, "numpy_version": np.__version__,
                    "python": platform.python_version(), "torch_num_threads": 1, "default_dtype": "float64",
                    "generator": "make_sgd_reference.py"},
            "param_names": names, "param_shapes": shapes, "steps": steps,
            "initial": {k: quad["x0"][k] for k in names}, "grads_first_calls": first,
            "trajectory": trajectory, "final_state": final}


if __name__ == "__main__":
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    with open(os.path.join(HERE, "problems.json")) as f:
        problems = json.load(f)
    # Heavy ball with dampening, and Nesterov with coupled L2 weight decay.
    runs = [("quad__sgd_momentum", {"lr": 1e-2, "momentum": 0.9, "dampening": 0.5, "weight_decay": 0.0,
                                    "nesterov": False}),
            ("quad__sgd_nesterov", {"lr": 1e-2, "momentum": 0.9, "dampening": 0.0, "weight_decay": 1e-2,
                                    "nesterov": True})]
    for name, hyper in runs:
        out = run(name, 50, hyper, problems)
        with open(os.path.join(HERE, name + ".json"), "w") as f:
            json.dump(out, f, separators=(",", ":"))
        print("wrote", name + ".json")
