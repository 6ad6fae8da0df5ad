"""A universal adversarial suffix found by greedy coordinate gradient (GCG, Zou et al. 2023).

The suffix is appended to each question; the objective is the summed log-probability of the right answers of
the training items (cloze: " {choice}" after the stem; letter: " A".. after the lm-eval prompt). Each step
takes the gradient of the objective with respect to a one-hot encoding of the suffix tokens, draws candidate
single-token substitutions from each position's top-k, scores them on a minibatch of items, and keeps the best.
Candidates are limited to whole-word tokens whose text round-trips through the tokenizer, so the suffix found
is exactly the text that the evaluation then appends.
"""

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._models import input_device
from ..data import LETTERS, MCQItem, encode, letter_prompt, pad_batch, pad_id
from ..errors import ConfigError


@dataclass(frozen=True)
class Suffix:
    """The suffix found, as text and token ids, with the objective (mean answer log-prob) per step."""

    text: str
    ids: list[int]
    objective: list[float]


def _parts(item: MCQItem, format: str) -> tuple[str, str, str]:
    """(text before the suffix, text after it, the right answer's continuation)."""
    if format == "cloze":
        return item.question, "", " " + item.choices[item.answer]
    prompt = letter_prompt(item)
    head = item.question.strip()
    return head, prompt[len(head) :], " " + LETTERS[item.answer]


def with_suffix(items: Sequence[MCQItem], text: str) -> list[MCQItem]:
    """The items with ``text`` appended to each question (what the evaluation sees)."""
    return [MCQItem(item.question.rstrip() + text, item.choices, item.answer, item.entity) for item in items]


def _allowed(tokenizer: Any) -> Tensor:
    special = set(getattr(tokenizer, "all_special_ids", []))
    allowed = []
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        whole_word = token_id not in special and len(text) > 1 and text[0] == " " and text[1:].isalpha()
        if whole_word and encode(tokenizer, text) == [token_id]:
            allowed.append(token_id)
    if not allowed:
        raise ConfigError("the tokenizer has no whole-word tokens to build a suffix from")
    return torch.tensor(allowed)


class _Batch:
    """Token ids of (prefix, rest, answer) per item, and the loss of a suffix on them."""

    def __init__(self, tokenizer: Any, items: Sequence[MCQItem], format: str, device: torch.device) -> None:
        self.parts = [[encode(tokenizer, p) for p in _parts(item, format)] for item in items]
        if any(not answer for _, _, answer in self.parts):
            raise ConfigError("an answer tokenizes to nothing; the items do not fit this tokenizer")
        self.pad, self.device = pad_id(tokenizer), device

    def sequences(self, suffixes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """input ids, attention mask and target mask (answer positions) for every (suffix, item) pair."""
        rows, spans = [], []
        for suffix in suffixes.tolist():
            for prefix, rest, answer in self.parts:
                seq = prefix + suffix + rest + answer
                rows.append(seq)
                spans.append((len(seq) - len(answer), len(seq)))
        ids, mask = pad_batch(rows, self.pad)
        target = torch.zeros_like(ids, dtype=torch.bool)
        for i, (start, end) in enumerate(spans):
            target[i, start:end] = True
        return ids.to(self.device), mask.to(self.device), target.to(self.device)


def _answer_logprob(logits: Tensor, ids: Tensor, target: Tensor) -> Tensor:
    """Summed log-probability of the target tokens of each row."""
    logprobs = logits[:, :-1].float().log_softmax(dim=-1).gather(2, ids[:, 1:, None])[..., 0]
    return (logprobs * target[:, 1:]).sum(dim=1)


def gcg_suffix(
    model: nn.Module,
    tokenizer: Any,
    items: Sequence[MCQItem],
    *,
    format: Literal["cloze", "letter"] = "cloze",
    length: int = 8,
    steps: int = 40,
    top_k: int = 32,
    candidates: int = 32,
    items_per_step: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> Suffix:
    """Search a universal suffix that raises the log-probability of the right answers of ``items``."""
    for name, value in (("length", length), ("steps", steps), ("top_k", top_k), ("candidates", candidates)):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if not items:
        raise ConfigError("no items to optimise the suffix on")
    device = input_device(model)
    embeddings = model.get_input_embeddings().weight  # type: ignore[operator,union-attr]
    allowed = _allowed(tokenizer).to(device)
    if top_k > len(allowed):
        raise ConfigError(f"top_k {top_k} exceeds the {len(allowed)} whole-word tokens a suffix can use; lower --top-k")
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    suffix = allowed[torch.randint(len(allowed), (length,), generator=generator).to(device)]
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    was_training = model.training
    model.eval()
    objective = []
    try:
        for _ in tqdm(range(steps), desc="suffix", disable=not progress, unit="step"):
            chosen = rng.sample(list(items), min(items_per_step, len(items)))
            batch = _Batch(tokenizer, chosen, format, device)
            grad = _token_gradient(model, embeddings, batch, suffix)
            grad[:, ~torch.isin(torch.arange(grad.shape[1], device=device), allowed)] = float("inf")
            top = (-grad).topk(top_k, dim=1).indices  # the substitutions that raise the objective most
            trials = suffix.repeat(candidates, 1)
            positions = torch.randint(length, (candidates,), generator=generator).to(device)
            picks = torch.randint(top_k, (candidates,), generator=generator).to(device)
            trials[torch.arange(candidates, device=device), positions] = top[positions, picks]
            trials = torch.cat([suffix[None], trials])
            scores = _score(model, batch, trials)
            suffix = trials[int(scores.argmax())]
            objective.append(float(scores.max()) / len(chosen))
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)
    ids = suffix.tolist()
    return Suffix(tokenizer.decode(ids), ids, objective)


def _token_gradient(model: nn.Module, embeddings: Tensor, batch: _Batch, suffix: Tensor) -> Tensor:
    """d(objective)/d(one-hot suffix), [length vocab]: which tokens at which position would raise it."""
    ids, mask, target = batch.sequences(suffix[None])
    one_hot = torch.nn.functional.one_hot(suffix, embeddings.shape[0]).to(embeddings.dtype).requires_grad_(True)
    with torch.enable_grad():
        embeds = embeddings[ids].detach().clone()
        suffix_embeds = one_hot @ embeddings
        for row, (prefix, _, _) in enumerate(batch.parts):
            embeds[row, len(prefix) : len(prefix) + len(suffix)] = suffix_embeds
        logits = model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits
        loss = -_answer_logprob(logits, ids, target).sum()
        loss.backward()
    assert one_hot.grad is not None  # one_hot requires grad and the loss depends on it
    return one_hot.grad


@torch.no_grad()
def _score(model: nn.Module, batch: _Batch, suffixes: Tensor, chunk: int = 512) -> Tensor:
    """Summed answer log-probability over the batch's items, for each suffix."""
    ids, mask, target = batch.sequences(suffixes)
    totals = []
    for start in range(0, len(ids), chunk):
        logits = model(
            input_ids=ids[start : start + chunk], attention_mask=mask[start : start + chunk], use_cache=False
        ).logits
        totals.append(_answer_logprob(logits, ids[start : start + chunk], target[start : start + chunk]))
    return torch.cat(totals).view(len(suffixes), -1).sum(dim=1)
