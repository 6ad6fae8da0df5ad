"""The optimizers RMU can use: torch's AdamW, and the AdamW that the published RMU code ran.

The published code (WMDP repository) does ``from transformers import AdamW``: the AdamW that transformers
shipped up to v4 (removed in v5). Its update adds ``eps`` to the root of the *uncorrected* second moment and
folds both bias corrections into the step size::

    m_t = β1·m + (1-β1)·g            v_t = β2·v + (1-β2)·g²
    p  -= lr · sqrt(1-β2^t)/(1-β1^t) · m_t / (sqrt(v_t) + eps)        (then, if decay: p -= lr·wd·p)

``torch.optim.AdamW`` adds ``eps`` to the *corrected* root, ``sqrt(v_t/(1-β2^t)) + eps``. The two agree when
gradients are large next to ``eps``; with the gradients of a 7B RMU run (mean |g| 1e-7 to 1e-4) and eps 1e-6,
torch's steps are many times larger early on (``benchmarks/bench_adamw_legacy.py`` measures the ratio).
The published learning rate (5e-5) was tuned with the legacy rule.
"""

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from .config import OPTIMIZERS


class LegacyAdamW(torch.optim.Optimizer):
    """transformers' pre-v5 ``AdamW`` update rule (defaults: betas (0.9, 0.999), eps 1e-6, no weight decay,
    ``correct_bias=True``), written here from its formula; see the module docstring."""

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        correct_bias: bool = True,
    ) -> None:
        if not lr >= 0 or not eps >= 0 or not 0 <= betas[0] < 1 or not 0 <= betas[1] < 1:
            raise ConfigError(f"invalid LegacyAdamW settings: lr={lr}, betas={betas}, eps={eps}")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "correct_bias": correct_bias}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                step_size = group["lr"]
                if group["correct_bias"]:
                    step_size *= math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
                p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-step_size)
                if group["weight_decay"] > 0.0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])
        return loss


def make_optimizer(name: str, params: Iterable[Tensor], lr: float) -> torch.optim.Optimizer:
    """``adamw-legacy`` (the published code's) or ``adamw`` (torch's), eps 1e-6 and no weight decay in both."""
    if name == "adamw-legacy":
        return LegacyAdamW(params, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, eps=1e-6, weight_decay=0.0)
    raise ConfigError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")


__all__ = ["LegacyAdamW", "make_optimizer"]
