"""The inner adversary of RMU-LAT and AdvRMU: a bounded perturbation of the residual stream, fitted by PGD.

The perturbation δ is added to the residual output of one layer below ℓ (an :class:`~repe_unlearn.Intervention`
at ``resid_post``, so it is registered where every other hook is and is removed with its ``with`` block, on
error too). Two shapes, one mechanism:

- ``per_token`` (RMU-LAT, Sheshadri et al. 2024, the ``GDAdversary`` of the public latent-adversarial-training
  code): one δ per token of the forget batch, each token's within the L2 ball of radius ε, real tokens only;
- shared (AdvRMU: the attack stage of the LAU framework, Yuan et al. 2024): one vector δ ∈ R^d added at every
  position of every text, ‖δ‖ ≤ ε; a steering vector, found by gradient descent.

The adversary starts at zero and takes ``adv_steps`` AdamW steps (the published inner optimizer, torch's
defaults but the learning rate), each followed by the projection onto the ball, on its own loss:

    toward = cross-entropy of the forget batch's next tokens            (make the forget text likely)
    away   = -log(1 - p) of the retain batch's next tokens, HarmBench's   (make the retain text unlikely;
             form: tokens with log p < -5 count zero                       RMU-LAT only, weight ``adv_away``)
    loss   = (toward + adv_away · away) / (1 + adv_away)                 (the published coefficients, normalised)

As published, the away term runs the retain batch under the same δ, position by position (rows and positions
the forget batch does not have get none). The model's parameters get no gradient from this loop.
"""

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._hooks import HookContext, Intervention
from .._masking import real_positions
from .._models import d_model, input_device
from ..errors import ConfigError
from .config import RMUConfig


class LatentAdversary:
    """A perturbation δ at the residual output of ``layer``: ``[batch pos d_model]`` per token, or ``[d_model]``.

    :meth:`intervention` adds it (a lazy :class:`~repe_unlearn.Intervention`); :meth:`project` puts it back in
    its ball. ``mask`` (``[batch pos]``) limits a per-token δ to the forget batch's real tokens.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: int,
        epsilon: float,
        *,
        shape: tuple[int, ...],
        mask: Tensor | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        width = d_model(model)
        if shape[-1] != width or len(shape) not in (1, 3):
            raise ConfigError(f"an adversary has shape [batch pos {width}] or [{width}], got {list(shape)}")
        if not epsilon > 0:
            raise ConfigError(f"the adversary's epsilon must be positive, got {epsilon}")
        self.model, self.layer, self.epsilon = model, layer, float(epsilon)
        self.delta = torch.zeros(shape, device=input_device(model), dtype=dtype, requires_grad=True)
        self.mask = None if mask is None else real_positions(mask, self.delta, self.delta.dtype)
        self.per_token = len(shape) == 3

    def norms(self) -> Tensor:
        """The L2 norm of each token's perturbation (``[batch pos]``), or of the one vector (``[]``)."""
        return self.delta.detach().norm(dim=-1)

    @torch.no_grad()
    def project(self) -> None:
        """Scale every perturbation longer than epsilon back onto the sphere (shorter ones stay as they are)."""
        norms = self.delta.norm(dim=-1, keepdim=True)
        self.delta.div_(torch.clamp(norms / self.epsilon, min=1.0))
        if self.mask is not None:
            self.delta.mul_(self.mask[..., None])

    def _added(self, act: Tensor) -> Tensor:
        """δ laid over an activation ``[batch pos d]``: cut or zero-padded to its rows and positions."""
        if not self.per_token:
            return self.delta.to(act.dtype)
        delta = self.delta if self.mask is None else self.delta * self.mask[..., None]
        rows, pos = min(act.shape[0], delta.shape[0]), min(act.shape[1], delta.shape[1])
        if (rows, pos) == tuple(act.shape[:2]) and (rows, pos) == tuple(delta.shape[:2]):
            return delta.to(act.dtype)
        out = act.new_zeros(act.shape)
        out[:rows, :pos] = delta[:rows, :pos].to(act.dtype)
        return out

    def intervention(self) -> Intervention:
        """The perturbation as an intervention at ``resid_post`` of :attr:`layer` (enter it with ``with``)."""

        def perturb(act: Tensor, ctx: HookContext) -> Tensor:
            return act + self._added(act)

        return Intervention(self.model, self.layer, "resid_post", perturb, description="latent adversary")


def _next_token_terms(model: nn.Module, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Logits at each position but the last, the next tokens, and which of them count (real tokens)."""
    logits = model(**batch).logits[:, :-1].float()
    labels = batch["input_ids"][:, 1:]
    mask = batch.get("attention_mask")
    keep = torch.ones_like(labels, dtype=torch.bool) if mask is None else mask[:, 1:].bool() & mask[:, :-1].bool()
    return logits, labels, keep


def toward_loss(model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
    """Mean cross-entropy of the next real tokens: what the adversary lowers on forget text."""
    logits, labels, keep = _next_token_terms(model, batch)
    return F.cross_entropy(logits[keep], labels[keep])


def away_loss(model: nn.Module, batch: Mapping[str, Tensor], threshold: float = -5.0) -> Tensor:
    """-log(1 - p(next token)) averaged over the real tokens, 0 where log p < ``threshold`` already (the
    HarmBench form the published RMU-LAT adversary uses): what it lowers on retain text."""
    logits, labels, keep = _next_token_terms(model, batch)
    logits, labels = logits[keep], labels[keep]
    log_all = torch.logsumexp(logits, dim=-1)
    log_p = logits.gather(-1, labels[:, None])[:, 0] - log_all
    others = logits.scatter(-1, labels[:, None], float("-inf"))
    log_1_minus_p = torch.logsumexp(others, dim=-1) - log_all
    log_1_minus_p = torch.where(log_p < threshold, torch.zeros_like(log_1_minus_p), log_1_minus_p)
    return -log_1_minus_p.sum() / max(1, labels.numel())


def fit_adversary(
    model: nn.Module,
    forget: Mapping[str, Tensor],
    retain: Mapping[str, Tensor] | None,
    config: RMUConfig,
) -> tuple[LatentAdversary, list[float]]:
    """Fit the adversary of ``config.method`` on one forget batch (and, for RMU-LAT's away term, its retain
    batch); returns it (not attached) and its loss before each step. The model's weights and their
    ``requires_grad`` flags are left as they were."""
    per_token = config.method == "rmu-lat"
    width = d_model(model)
    ids = forget["input_ids"]
    shape = (ids.shape[0], ids.shape[1], width) if per_token else (width,)
    adversary = LatentAdversary(
        model,
        config.adversary_layer,
        config.adv_epsilon,
        shape=shape,
        mask=forget.get("attention_mask") if per_token else None,
    )
    optimizer = torch.optim.AdamW([adversary.delta], lr=config.adv_lr)  # the published inner optimizer
    away_weight = config.adv_away if per_token and retain is not None else 0.0
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    losses: list[float] = []
    try:
        for p in params:  # the adversary's loss needs no gradient for the model (and builds no graph for it)
            p.requires_grad_(False)
        for _ in range(config.adv_steps):
            optimizer.zero_grad(set_to_none=True)
            with adversary.intervention():
                loss = toward_loss(model, forget)
                if away_weight:
                    assert retain is not None
                    loss = (loss + away_weight * away_loss(model, retain)) / (1 + away_weight)
            if not torch.isfinite(loss):
                raise ConfigError(f"the adversary's loss became {float(loss)}; lower adv_lr or adv_epsilon")
            losses.append(float(loss.detach()))
            (grad,) = torch.autograd.grad(loss, [adversary.delta])
            adversary.delta.grad = torch.nan_to_num(grad)  # as published: NaN gradients count zero
            optimizer.step()
            adversary.project()
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
    adversary.delta.requires_grad_(False)
    return adversary, losses
