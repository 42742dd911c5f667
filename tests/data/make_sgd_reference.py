#!/usr/bin/python3
"""Writes tests/data/quad__sgd_*.json: torch.optim.SGD trajectories on the `quad` problem of
problems.json, in the optref-v1 format of the other run files (read by tools/reference.hpp).

Needs Debian's python3-torch (1.13.1); torch's SGD is run unchanged.

    /usr/bin/python3 tests/data/make_sgd_reference.py   # from the repository root
"""
import torch

from optref_quad import flat, run_quad, setup, write

if __name__ == "__main__":
    problems = setup()
    # Heavy ball with dampening, and Nesterov with coupled L2 weight decay.
    runs = [("quad__sgd_momentum", {"lr": 1e-2, "momentum": 0.9, "dampening": 0.5, "weight_decay": 0.0,
                                    "nesterov": False}),
            ("quad__sgd_nesterov", {"lr": 1e-2, "momentum": 0.9, "dampening": 0.0, "weight_decay": 1e-2,
                                    "nesterov": True})]
    for name, hyper in runs:
        write(name, run_quad(name, 50, torch.optim.SGD, "torch.optim.SGD(foreach=False)", hyper, problems,
                             lambda st: {"momentum_buffer": flat(st["momentum_buffer"])}, "make_sgd_reference.py"))
