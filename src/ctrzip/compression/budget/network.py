"""Candidate forms of the dense network for the budget allocator.

The network (every plain ``nn.Linear``: MLP towers, cross and gate layers, attention
projections, output heads) is one allocation unit with these forms:

* ``float``: as trained;
* ``int8``: every Linear with int8 weights (``Int8Linear``, per-output-channel scale);
* ``lowrank@E+int8``: each Linear replaced by feature mimicking at the smallest rank whose
  output principal directions keep a share ``E`` of the output variance (Yu et al., KDD 2024,
  eqs. 1-5: ``y ~ mu + U U^T (W x + b - mu)``, ``LowRankLinear.from_pca``), where that is
  smaller than the layer, then both factors in int8; the other Linears in int8.

The output statistics come from one calibration pass over training rows of the float model,
so every layer's projection mimics the original layer's outputs. Layers are not re-fitted
in sequence: the verify pass of the allocator measures what stacking their errors costs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ctrzip.compression.budget.candidates import Candidate
from ctrzip.compression.sharded import sharded_calibrate
from ctrzip.compression.stats import PCAResult, RunningMoments, pca
from ctrzip.data.dataset import SplitArrays
from ctrzip.nn.int8_linear import Int8Linear
from ctrzip.nn.lowrank_linear import LowRankLinear


def module_bytes(module: nn.Module) -> int:
    """Bytes of every parameter and buffer of ``module`` (what the artifact stores for it)."""
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def output_pcas(
    model: nn.Module, fqns: Sequence[str], rows: SplitArrays, batch_size: int, device: torch.device
) -> dict[str, PCAResult]:
    """PCA of each Linear's outputs over ``rows`` (float64 moments, one pass; under torchrun
    each rank observes its share of the batches and the moments are all-reduced)."""
    observers = {fqn: RunningMoments() for fqn in fqns}
    sharded_calibrate(model, observers, rows, batch_size=batch_size, device=device)
    return {fqn: pca(obs) for fqn, obs in observers.items()}


def lowrank_int8(linear: nn.Linear, res: PCAResult, energy: float) -> nn.Module | None:
    """Feature mimicking at the rank keeping ``energy`` of the output variance, factors in int8.

    Returns None when the factorized form would not store fewer bytes than ``Int8Linear``.
    """
    k = res.rank_for(energy)
    n, m = linear.in_features, linear.out_features
    if k * (n + m) >= n * m:  # int8 weights dominate both forms: compare their sizes
        return None
    lr = LowRankLinear.from_pca(linear, res.mean, res.basis[:, :k])
    lr.down = Int8Linear.from_linear(lr.down)  # type: ignore[assignment]
    lr.up = Int8Linear.from_linear(lr.up)  # type: ignore[assignment]
    return lr


def network_candidates(
    linears: dict[str, nn.Linear],
    pcas: dict[str, PCAResult],
    energies: Sequence[float],
    install: Callable[[dict[str, nn.Module]], None],
) -> list[tuple[Candidate, Callable[[], None]]]:
    """``[(candidate, apply)]``: float, int8 and one low-rank + int8 form per energy.

    Args:
        linears: ``{fqn: Linear}`` of the float model.
        pcas: output PCA per fqn (may lack entries: those Linears get int8 only).
        energies: output-variance shares for the low-rank forms, e.g. ``(0.99, 0.95)``.
        install: puts ``{fqn: module}`` into the model (original modules for ``float``).

    The candidate's ``error`` is the largest per-layer relative output error
    ``1 - energy kept`` (0 for int8, whose error the allocator measures directly).
    """
    keep = sum(module_bytes(m) for m in linears.values())
    int8 = {f: Int8Linear.from_linear(m) for f, m in linears.items()}
    out: list[tuple[Candidate, Callable[[], None]]] = [
        (Candidate("float", keep, 0.0, None), lambda: install(dict(linears)))
    ]
    int8_bytes = sum(module_bytes(m) for m in int8.values())
    if int8_bytes < keep:
        out.append((Candidate("int8", int8_bytes, 0.0, None), lambda: install(dict(int8))))
    for e in energies:
        mods: dict[str, nn.Module] = dict(int8)
        err = 0.0
        for fqn, lin in linears.items():
            res = pcas.get(fqn)
            lr = None if res is None else lowrank_int8(lin, res, e)
            if lr is not None:
                mods[fqn] = lr
                err = max(err, 1.0 - float(res.energy[lr.rank - 1]))  # type: ignore[union-attr]
        nbytes = sum(module_bytes(m) for m in mods.values())
        if nbytes < int8_bytes:
            out.append((Candidate(f"lowrank@{e:g}+int8", nbytes, err, None), lambda mods=mods: install(mods)))
    return out
