"""Direction ablation: project the direction RMU writes out of the residual stream, from ℓ on, and evaluate.

The direction is either the control vector saved with the model or the difference of mean activations of the
unlearned and base models on forget text at the steered layer.
"""

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._cache import collect
from .._models import d_model, n_layers, resolve_layer
from .._vectors import ablate_direction
from ..data import tokenize_batches
from ..errors import ConfigError
from .result import AttackResult


@torch.no_grad()
def mean_difference(
    model: nn.Module,
    base: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    layer: int,
    *,
    batch_size: int = 16,
    max_length: int = 512,
) -> Tensor:
    """Mean over non-pad tokens of h_ℓ(model) − h_ℓ(base) on ``texts``: what unlearning added at ℓ.

    Texts are cut at ``max_length`` tokens, so memory is bounded by ``batch_size × max_length`` whatever the
    documents' lengths (WMDP corpora hold whole papers)."""
    if not texts:
        raise ConfigError("no text to estimate the direction from")
    if d_model(model) != d_model(base):
        raise ConfigError(f"the base model's d_model is {d_model(base)}, the model's {d_model(model)}: not its base")
    total, count = None, 0
    for batch in tokenize_batches(tokenizer, texts, batch_size, max_length=max_length):
        mask = batch["attention_mask"].bool()
        diff = collect(model, batch, layer)[layer] - collect(base, batch, layer)[layer]
        summed = diff[mask].sum(dim=0)
        total = summed if total is None else total + summed
        count += int(mask.sum())
    assert total is not None  # texts is not empty
    return total / count


def ablate(
    model: nn.Module, direction: Tensor, layer: int, *, evaluate: Callable[[], dict[str, float]]
) -> AttackResult:
    """Evaluate, then evaluate again with ``direction`` projected out at ``layer`` and every layer after it."""
    if not torch.isfinite(direction).all() or float(direction.norm()) == 0:
        raise ConfigError("the direction to ablate must be finite and non-zero")
    start = resolve_layer(model, layer)
    before = evaluate()
    with ablate_direction(model, direction, range(start, n_layers(model))):
        after = evaluate()
    return AttackResult("ablate", before, after, details={"layers": list(range(start, n_layers(model)))})
