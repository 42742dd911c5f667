"""Shared by tests/data/make_*_reference.py: runs a torch optimizer on the `quad` problem of
problems.json and returns the run in the optref-v1 format of the other run files (read by
tools/reference.hpp)."""
import json
import os
import platform

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def setup():
    """float64, one thread; returns problems.json."""
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    with open(os.path.join(HERE, "problems.json")) as f:
        return json.load(f)


def flat(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def run_quad(name, steps, optimizer, impl, hyper, problems, final_state, generator, extra_env=None):
    """`steps` calls of optimizer(params, foreach=False, **hyper) on quad's closed-form gradients;
    final_state(torch state of one parameter) gives that parameter's "final_state" entry."""
    quad = problems["problems"]["quad"]
    names = problems["param_names"]
    shapes = problems["param_shapes"]
    A = {k: torch.tensor(quad["A"][k]["data"]).reshape(quad["A"][k]["shape"]) for k in names}
    params = [torch.tensor(quad["x0"][k]).reshape(shapes[k]).clone().requires_grad_(False) for k in names]
    opt = optimizer(params, foreach=False, **hyper)

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
    env = {"torch_version": torch.__version__, "numpy_version": np.__version__, "python": platform.python_version(),
           "torch_num_threads": 1, "default_dtype": "float64", "generator": generator, **(extra_env or {})}
    return {"format": "optref-v1", "name": name, "problem": "quad", "problems_file": "problems.json",
            "dtype": "float64", "layout": "row-major (C order)",
            "optimizer": {"impl": impl, "hyperparams": hyper}, "env": env,
            "param_names": names, "param_shapes": shapes, "steps": steps,
            "initial": {k: quad["x0"][k] for k in names}, "grads_first_calls": first,
            "trajectory": trajectory,
            "final_state": {k: final_state(opt.state[p]) for k, p in zip(names, params)}}


def write(name, run):
    with open(os.path.join(HERE, name + ".json"), "w") as f:
        json.dump(run, f, separators=(",", ":"))
    print("wrote", name + ".json")
