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
import sys

import torch
import torch.optim.nadam as nadam_module

from optref_quad import flat, run_quad, setup, write

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


def final_state(st):
    return {"step": int(st["step"].item()), "exp_avg": flat(st["exp_avg"]), "exp_avg_sq": flat(st["exp_avg_sq"]),
            "mu_product": float(st["mu_product"].item())}


if __name__ == "__main__":
    problems = setup()
    patch = patch_torch_nadam()
    # 150 steps: the loop over mu_i in moment::NAdam stops early (product < 2^-54) after ~55.
    runs = [("quad__nadam", 150, {"lr": 1e-2, "betas": (0.99, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                                  "momentum_decay": 4e-3}),
            ("quad__nadam_l2", 50, {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2,
                                    "momentum_decay": 4e-2})]
    for name, steps, hyper in runs:
        write(name, run_quad(name, steps, torch.optim.NAdam, "torch.optim.NAdam(foreach=False)", hyper, problems,
                             final_state, "make_nadam_reference.py", {"patch": patch}))
