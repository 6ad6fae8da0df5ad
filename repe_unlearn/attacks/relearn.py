"""Relearning: fine-tune the unlearned model on some text and watch held-out knowledge come back.

If fine-tuning on half of the forget entities restores facts about the *other* half, the knowledge was hidden,
not removed (those facts were never in the fine-tuning data).
"""

import fnmatch
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .._models import input_device
from ..data import tokenize_batches
from ..errors import ConfigError, TrainingError
from .result import AttackResult, CurvePoint

Evaluate = Callable[[], dict[str, float]]


def _select(model: nn.Module, patterns: Sequence[str] | None) -> dict[str, nn.Parameter]:
    params = dict(model.named_parameters())
    if not patterns:
        return params
    chosen = {n: p for n, p in params.items() if any(fnmatch.fnmatch(n, pattern) for pattern in patterns)}
    if not chosen:
        raise ConfigError(f"no parameter matches {list(patterns)}; names look like {next(iter(params))!r}")
    return chosen


def _with_lora(model: nn.Module, rank: int) -> nn.Module:
    try:
        import peft
    except ImportError:
        raise ConfigError("LoRA relearning needs peft: pip install peft") from None
    config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", lora_dropout=0.0)
    return peft.get_peft_model(model, config)


def relearn(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    steps: int,
    evaluate: Evaluate,
    lr: float = 1e-3,
    batch_size: int = 8,
    eval_every: int = 10,
    params: Sequence[str] | None = None,
    lora_rank: int | None = None,
    max_length: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> AttackResult:
    """Fine-tune ``model`` in place on ``texts`` (LM loss, AdamW) for ``steps`` steps, evaluating every
    ``eval_every`` steps. ``params``: glob patterns of the tensors to train (default: all), or ``lora_rank``
    for LoRA adapters through peft."""
    if steps < 1:
        raise ConfigError(f"the number of relearning steps must be at least 1, got {steps}")
    if not texts:
        raise ConfigError("no text to relearn on")
    if eval_every < 1:
        raise ConfigError(f"eval_every must be at least 1, got {eval_every}")
    if not (0 < lr <= 10 and math.isfinite(lr)):
        raise ConfigError(f"the relearning learning rate must be in (0, 10], got {lr}")
    before = evaluate()
    trained = model
    if lora_rank:
        with torch.random.fork_rng(devices=[]):  # the adapters' random init follows ``seed``, not the global state
            torch.manual_seed(seed)
            trained = _with_lora(model, lora_rank)
    chosen = _select(trained, None if lora_rank else params)
    if lora_rank:
        chosen = {n: p for n, p in chosen.items() if p.requires_grad}
    flags = {n: p.requires_grad for n, p in trained.named_parameters()}
    for p in trained.parameters():
        p.requires_grad_(False)
    for p in chosen.values():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(list(chosen.values()), lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    order: list[str] = []
    curve = [CurvePoint(0, before)]
    device = input_device(model)
    was_training = trained.training
    trained.eval()  # dropout off, as in RMU: the attack is deterministic given the seed
    try:
        for step in tqdm(range(1, steps + 1), desc="relearn", disable=not progress, unit="step"):
            if len(order) < batch_size:
                order += rng.sample(list(texts), len(texts))
            chunk, order = order[:batch_size], order[batch_size:]
            batch = next(tokenize_batches(tokenizer, chunk, len(chunk), max_length=max_length, device=device))
            labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
            loss = trained(**batch, labels=labels).loss
            if not torch.isfinite(loss):
                raise TrainingError(f"the relearning loss became {float(loss.detach())} at step {step}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % eval_every == 0 or step == steps:
                curve.append(CurvePoint(step, evaluate(), float(loss.detach())))
    finally:
        for n, p in trained.named_parameters():
            p.requires_grad_(flags.get(n, False))
        trained.train(was_training)
    details = {
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "n_texts": len(texts),
        "trained": "lora" if lora_rank else (list(params) if params else "all"),
        **({"lora_rank": lora_rank} if lora_rank else {}),
    }
    return AttackResult("relearn", before, curve[-1].accuracy, curve, details)
