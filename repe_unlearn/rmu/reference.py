"""The published RMU loop (WMDP repository, ``rmu/unlearn.py``), re-implemented for comparison only.

It keeps a full frozen copy of the model, runs every forward pass through all layers and the LM head
(with the KV cache on, as ``model(**inputs)`` does by default), leaves every parameter requiring grad, and
averages the MSE over every position, padding included. Tests and ``benchmarks/bench_rmu.py`` run it beside
:func:`repe_unlearn.rmu.train` in ``reference_mode`` to show the same losses at a fraction of the cost.
Parameters are selected by name here too (the published code picks them by position).
"""

import copy
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._cache import record
from .config import RMUConfig
from .trainer import Batch, parameter_names, schedule


def _forward_with_cache(model: nn.Module, inputs: Batch, layer: int, *, no_grad: bool) -> Tensor:
    with torch.set_grad_enabled(not no_grad), record(model, layer, keep_graph=True) as cache:
        model(**inputs)
    return cache[layer]


def reference_rmu(
    model: nn.Module,
    forget: Sequence[Sequence[Batch]],
    retain: Sequence[Sequence[Batch]],
    config: RMUConfig,
    *,
    directions: Tensor,
    coefficients: Sequence[float],
) -> list[tuple[float, float, float]]:
    """Train ``model`` in place the published way; returns ``(forget_loss, retain_loss, seconds)`` per step."""
    frozen_model = copy.deepcopy(model).eval()
    model.train()
    params = dict(model.named_parameters())
    optimizer = torch.optim.AdamW(
        [params[name] for name in parameter_names(model, config)], lr=config.lr, eps=1e-6, weight_decay=0.0
    )
    dtype = next(model.parameters()).dtype
    control_vecs = [(c * u).to(dtype).view(1, 1, -1) for c, u in zip(coefficients, directions, strict=True)]
    alphas = config.per_topic("alpha", len(forget))
    losses = []
    for topic, index in schedule(len(forget), [len(b) for b in [*forget, *retain]], config.max_batches, config.epochs):
        start = time.perf_counter()
        updated_forget = _forward_with_cache(model, forget[topic][index], config.layer, no_grad=False)
        unlearn_loss = F.mse_loss(updated_forget, control_vecs[topic].expand_as(updated_forget))
        retain_inputs = retain[topic][index]
        updated_retain = _forward_with_cache(model, retain_inputs, config.layer, no_grad=False)
        frozen_retain = _forward_with_cache(frozen_model, retain_inputs, config.layer, no_grad=True)
        retain_loss = F.mse_loss(updated_retain, frozen_retain) * alphas[topic]
        loss = unlearn_loss + retain_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append((float(unlearn_loss.detach()), float(retain_loss.detach()), time.perf_counter() - start))
    return losses
