"""The published RMU loop (WMDP repository, ``rmu/unlearn.py`` + ``rmu/utils.py``), re-implemented for comparison.

Written from the published code's behaviour, independently of :mod:`repe_unlearn.rmu.trainer` (it shares no
code with it but parameter selection by name), so that a comparison of the two can see a deviation:

- reading (:func:`published_corpus`): JSON text for the bio corpus, every other file as raw lines (JSON
  syntax and newline included); a text is kept when ``len(text) > min_len``; batches are consecutive;
- tokenizing: ``tokenizer(batch, return_tensors="pt", padding=True, truncation=True, max_length=L)`` with the
  tokenizer set to truncate on the right, pad on the left, and pad with EOS; forget texts of topic t cut at
  ``config.forget_lengths(T)[t]`` tokens (the published 512 for bio, 768 after), retain texts at ``max_length``;
- the random direction: ``torch.manual_seed(seed)`` (and the CUDA seeds), then per topic
  ``torch.rand(1, 1, d, dtype=model.dtype, device=model.device)`` divided by its norm, times c;
- a full frozen copy of the model in eval mode, the updated model in ``.train()``, every forward pass through
  all layers and the LM head (KV cache on, as ``model(**inputs)`` does), the layer's output read by a
  forward hook, MSE averaged over every position (padding included), one backward of forget + retain;
- the optimizer: transformers' pre-v5 ``AdamW`` (betas 0.9/0.999, eps 1e-6, no weight decay, bias
  correction folded into the step size, eps on the uncorrected root), written out below from its formula;
  ``optimizer="adamw"`` swaps in ``torch.optim.AdamW`` to show that the comparison can tell the two apart.

Tests and ``benchmarks/bench_rmu.py`` run it beside :func:`repe_unlearn.rmu.unlearn` in reference mode.
"""

import copy
import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._models import d_model, decoder_layers
from .config import RMUConfig
from .trainer import model_depth, parameter_names


def published_corpus(path: str | os.PathLike[str], *, parse_json: bool, min_len: int = 0) -> list[str]:
    """A corpus read as the published ``get_data`` reads a file: the ``text`` of each JSON line when
    ``parse_json`` (the bio corpus), else each raw line; kept when ``len(text) > min_len``."""
    data = []
    with open(path) as f:
        for line in f:
            raw_text = json.loads(line)["text"] if parse_json else line
            if len(raw_text) > min_len:
                data.append(str(raw_text))
    return data


def _forward_with_cache(model: nn.Module, inputs: Any, module: nn.Module, *, no_grad: bool) -> Tensor:
    cache: list[Tensor] = []

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        cache.append(output[0] if isinstance(output, tuple) else output)

    handle = module.register_forward_hook(hook)
    try:
        with torch.set_grad_enabled(not no_grad):
            model(**inputs)
    finally:
        handle.remove()
    return cache[0]


def _legacy_adamw_step(params: Sequence[Tensor], state: list[dict[str, Any]], lr: float) -> None:
    """``p -= lr · sqrt(1-β2^t)/(1-β1^t) · m / (sqrt(v) + eps)``, β = (0.9, 0.999), eps 1e-6, no decay, with the
    published implementation's in-place operations in its order (in bf16 another order rounds differently)."""
    beta1, beta2, eps = 0.9, 0.999, 1e-6
    with torch.no_grad():
        for p, s in zip(params, state, strict=True):
            if p.grad is None:
                continue
            if not s:
                s.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
            s["t"] += 1
            s["m"].mul_(beta1).add_(p.grad, alpha=1.0 - beta1)
            s["v"].mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
            denom = s["v"].sqrt().add_(eps)
            step_size = lr * math.sqrt(1.0 - beta2 ** s["t"]) / (1.0 - beta1 ** s["t"])
            p.addcdiv_(s["m"], denom, value=-step_size)


def reference_rmu(
    model: nn.Module,
    tokenizer: Any,
    forget: Sequence[Sequence[str]],
    retain: Sequence[Sequence[str]],
    config: RMUConfig,
    *,
    optimizer: str = "adamw-legacy",
) -> list[tuple[float, float, float]]:
    """Train ``model`` in place the published way; returns ``(forget_loss, retain_loss, seconds)`` per step.

    Args:
        model: a causal LM; edited in place.
        tokenizer: its tokenizer (a copy is configured as the published script configures its own).
        forget: one list of texts per topic, as read (see :func:`published_corpus`).
        retain: one list of texts per topic.
        config: the hyperparameters (``steering_coeff``, ``alpha``, ``lr``, ``batch_size``, ``max_batches``,
            ``max_length``, ``forget_max_length``, ``min_len``, ``seed``, the layers).
        optimizer: ``"adamw-legacy"`` (published) or ``"adamw"`` (torch's, for the sensitivity check).

    Returns:
        ``(forget_loss, retain_loss, seconds)`` for each step.
    """
    config = config.resolved(model_depth(model))
    tok = copy.deepcopy(tokenizer)
    tok.truncation_side = "right"
    tok.padding_side = "left"
    tok.pad_token_id = tok.eos_token_id
    n_topics = len(forget)

    def batches(texts: Sequence[str]) -> list[list[str]]:
        data = [t for t in texts if len(t) > config.min_len]
        return [data[i : i + config.batch_size] for i in range(0, len(data), config.batch_size)]

    forget_data = [batches(t) for t in forget]
    retain_data = [batches(t) for t in retain]
    frozen_model = copy.deepcopy(model).eval()
    model.train()
    named = dict(model.named_parameters())
    params = [named[name] for name in parameter_names(model, config)]
    torch_adamw = None
    if optimizer == "adamw":
        torch_adamw = torch.optim.AdamW(params, lr=config.lr, eps=1e-6, weight_decay=0.0)
    legacy_state: list[dict[str, Any]] = [{} for _ in params]
    updated_module = decoder_layers(model)[config.layer]
    frozen_module = decoder_layers(frozen_model)[config.layer]

    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    width = d_model(model)
    devices = [device] if device.type == "cuda" else []
    coefficients = config.per_topic("steering_coeff", n_topics)
    with torch.random.fork_rng(devices=devices):  # the published script seeds the global generators
        torch.manual_seed(config.seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(config.seed)
        control_vecs = []
        for topic in range(n_topics):
            random_vector = torch.rand(1, 1, width, dtype=dtype, device=device)
            control_vecs.append(random_vector / torch.norm(random_vector) * coefficients[topic])

    lengths = config.forget_lengths(n_topics)
    alphas = config.per_topic("alpha", n_topics)
    n_batches = min(config.max_batches, *(len(b) for b in forget_data), *(len(b) for b in retain_data))
    losses = []
    for _ in range(config.epochs):
        for idx in range(n_batches):
            start = time.perf_counter()
            topic, batch = idx % n_topics, idx // n_topics
            forget_texts, retain_texts = forget_data[topic][batch], retain_data[topic][batch]
            unlearn_inputs = tok(
                forget_texts, return_tensors="pt", padding=True, truncation=True, max_length=lengths[topic]
            ).to(device)
            updated_forget = _forward_with_cache(model, unlearn_inputs, updated_module, no_grad=False)
            unlearn_loss = F.mse_loss(updated_forget, control_vecs[topic].expand_as(updated_forget))
            retain_inputs = tok(
                retain_texts, return_tensors="pt", padding=True, truncation=True, max_length=config.max_length
            ).to(device)
            updated_retain = _forward_with_cache(model, retain_inputs, updated_module, no_grad=False)
            frozen_retain = _forward_with_cache(frozen_model, retain_inputs, frozen_module, no_grad=True)
            retain_loss = F.mse_loss(updated_retain, frozen_retain) * alphas[topic]
            loss = unlearn_loss + retain_loss
            if torch_adamw is not None:
                torch_adamw.zero_grad()
            else:
                for p in params:
                    p.grad = None
            loss.backward()
            if torch_adamw is not None:
                torch_adamw.step()
            else:
                _legacy_adamw_step(params, legacy_state, config.lr)
            losses.append((float(unlearn_loss.detach()), float(retain_loss.detach()), time.perf_counter() - start))
    return losses
