"""Multiple-choice accuracy (WMDP/MMLU format, scored as lm-evaluation-harness scores it) and perplexity.

Letter format: the lm-eval zero-shot prompt ``{question}\\nA. ..\\nB. ..\\nAnswer:`` and the continuations
" A", " B", ...; context and continuation are tokenised as lm-eval does (no special tokens, trailing spaces of
the context moved to the continuation, the continuation = tokens of the whole past those of the context).
When every letter is a single token and the context tokenises the same alone as in the whole, one forward
pass per question reads all letters' log-probabilities (lm-eval runs one request per choice).
Cloze format: each choice scored as the summed log-probability of " {choice}" after the question, and
length-normalised accuracy as lm-eval's ``acc_norm`` (divided by the choice's length in characters).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from ._distributed import all_gather, all_reduce_sum, my_rows
from ._hooks import InterventionLike, as_intervention
from ._models import input_device
from ._positions import prompt_ends
from .data import LETTERS, MCQItem, encode, letter_prompt, pad_batch, pad_id, read_mcq
from .errors import ConfigError, DataError

Format = Literal["letter", "cloze"]


@dataclass(frozen=True)
class Prediction:
    """What the model chose for one item, with the score of every choice."""

    index: int
    pred: int
    answer: int
    scores: list[float]


@dataclass
class MCQResult:
    """Accuracy on one set of items (``acc_norm`` for cloze only)."""

    name: str
    format: Format
    accuracy: float
    n: int
    acc_norm: float | None = None
    predictions: list[Prediction] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The summary written under ``results`` by ``--json``."""
        out: dict[str, Any] = {"accuracy": self.accuracy, "n": self.n, "format": self.format}
        if self.acc_norm is not None:
            out["acc_norm"] = self.acc_norm
        return out


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation token ids, split the way lm-evaluation-harness splits them."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = encode(tokenizer, context + continuation)
    context_ids = encode(tokenizer, context)
    return context_ids, whole[len(context_ids) :]


def _max_length(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return 2048


@torch.no_grad()
def loglikelihoods(
    model: nn.Module,
    tokenizer: Any,
    requests: Sequence[tuple[list[int], list[int]]],
    *,
    batch_size: int = 16,
    progress: bool = False,
) -> list[float]:
    """Summed log-probability of each continuation given its context (token ids), right-padded batches."""
    device, limit, pad = input_device(model), _max_length(model), pad_id(tokenizer)
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i][0]) - len(requests[i][1]))
    out = [0.0] * len(requests)
    for start in tqdm(range(0, len(order), batch_size), disable=not progress, desc="scoring", unit="batch"):
        chunk = order[start : start + batch_size]
        rows = []
        for i in chunk:
            context, continuation = requests[i]
            if not continuation:
                raise DataError(f"request {i} has an empty continuation")
            rows.append(((context or [pad]) + continuation)[-(limit + 1) :][:-1])
        ids, mask = pad_batch(rows, pad)
        # "last" steers each row's last prompt token, the same position for every choice (`prompt_ends`)
        ends = torch.tensor([max(len(row) - len(requests[i][1]), 0) for row, i in zip(rows, chunk, strict=True)])
        with prompt_ends(ends):
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
        for row, i in enumerate(chunk):
            continuation = requests[i][1]
            end = len(rows[row])
            span = logits[row, end - len(continuation) : end].float().log_softmax(dim=-1)
            target = torch.tensor(continuation, device=span.device)
            out[i] = float(span.gather(1, target[:, None]).sum())
    return out


@torch.no_grad()
def _letter_scores_one_pass(
    model: nn.Module, contexts: list[list[int]], letter_ids: list[int], pad: int, batch_size: int, progress: bool
) -> list[list[float]]:
    """Log-probabilities of single-token letters after each context: one forward pass per question.

    Left padding with explicit position ids (so every real token keeps its position) lets the LM head run on
    the last position only.
    """
    device, limit = input_device(model), _max_length(model)
    scores: list[list[float]] = []
    for start in tqdm(range(0, len(contexts), batch_size), disable=not progress, desc="questions", unit="batch"):
        rows = [c[-limit:] for c in contexts[start : start + batch_size]]
        ids, mask = pad_batch(rows, pad, side="left")
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            use_cache=False,
            logits_to_keep=1,
        ).logits[:, -1]
        logprobs = logits.float().log_softmax(dim=-1)[:, letter_ids]
        scores.extend(logprobs.tolist())
    return scores


def evaluate_mcq(
    model: nn.Module,
    tokenizer: Any,
    items: Sequence[MCQItem],
    *,
    format: Format = "letter",
    subject: str | None = None,
    batch_size: int = 16,
    intervention: InterventionLike | None = None,
    name: str = "mcq",
    progress: bool = False,
) -> MCQResult:
    """Accuracy of ``model`` on ``items``, scored as lm-evaluation-harness scores them.

    Args:
        model: a causal LM.
        tokenizer: its tokenizer.
        items: the questions.
        format: ``"letter"`` (lm-eval's zero-shot A/B/C/D prompt) or ``"cloze"`` (each choice's text).
        subject: adds lm-eval's description line about ``subject`` (letter format).
        batch_size: questions per forward pass (a positive integer).
        intervention: a lazy intervention (``vector.apply(model, 4.0)``), a list of them, or any context
            manager; entered around this evaluation only, and always left, also when the evaluation fails.
        name: the name of this set in the result.
        progress: show a progress bar.

    Returns:
        An :class:`MCQResult` with the accuracy, ``acc_norm`` (cloze) and every prediction.
    """
    with as_intervention(intervention, model):
        if format not in ("letter", "cloze"):
            raise ConfigError(f"unknown format {format!r}; valid: letter, cloze")
        if not items:
            raise DataError(f"{name}: no items to evaluate")
        _check_items(items, name)
        _check_batch_size(batch_size)
        was_training = model.training
        model.eval()
        try:
            # under torchrun each rank scores a contiguous share of the items; the shares are gathered in order
            mine = list(items[my_rows(len(items))])
            local = _scores(model, tokenizer, mine, format, subject, batch_size, progress) if mine else []
            scores = [row for part in all_gather(local) for row in part]
        finally:
            model.train(was_training)
    predictions = [
        Prediction(i, max(range(len(s)), key=s.__getitem__), item.answer, s)
        for i, (item, s) in enumerate(zip(items, scores, strict=True))
    ]
    accuracy = sum(p.pred == p.answer for p in predictions) / len(predictions)
    acc_norm = None
    if format == "cloze":
        hits = 0
        for item, s in zip(items, scores, strict=True):
            normed = [score / max(len(choice), 1) for score, choice in zip(s, item.choices, strict=True)]
            hits += max(range(len(normed)), key=normed.__getitem__) == item.answer
        acc_norm = hits / len(items)
    return MCQResult(name, format, accuracy, len(items), acc_norm, predictions)


def _scores(
    model: nn.Module,
    tokenizer: Any,
    items: Sequence[MCQItem],
    format: Format,
    subject: str | None,
    batch_size: int,
    progress: bool,
) -> list[list[float]]:
    if format == "letter":
        pairs = [
            [encode_pair(tokenizer, letter_prompt(item, subject), f" {LETTERS[k]}") for k in range(len(item.choices))]
            for item in items
        ]
        width = max(len(item.choices) for item in items)
        letters = [encode_pair(tokenizer, "Answer:", f" {LETTERS[k]}")[1] for k in range(width)]
        one_pass = all(len(ids) == 1 for ids in letters) and all(
            cont == letters[k] for item_pairs in pairs for k, (_, cont) in enumerate(item_pairs)
        )
        if one_pass:
            contexts = [item_pairs[0][0] for item_pairs in pairs]
            letter_ids = [ids[0] for ids in letters]
            full = _letter_scores_one_pass(model, contexts, letter_ids, pad_id(tokenizer), batch_size, progress)
            return [row[: len(item.choices)] for row, item in zip(full, items, strict=True)]
    else:
        pairs = [[encode_pair(tokenizer, item.question, f" {choice}") for choice in item.choices] for item in items]
    for i, item_pairs in enumerate(pairs):
        for k, (_, continuation) in enumerate(item_pairs):
            if not continuation:
                raise DataError(
                    f"item {i}, choice {k} ({items[i].choices[k]!r}) tokenizes to nothing with this model's "
                    "tokenizer; the file does not fit this tokenizer"
                )
    flat = [pair for item_pairs in pairs for pair in item_pairs]
    values = loglikelihoods(model, tokenizer, flat, batch_size=batch_size, progress=progress)
    out, at = [], 0
    for item_pairs in pairs:
        out.append(values[at : at + len(item_pairs)])
        at += len(item_pairs)
    return out


@torch.no_grad()
def perplexity(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 8,
    intervention: InterventionLike | None = None,
) -> float:
    """Token-level perplexity: exp of the mean negative log-likelihood of every token after the first.

    ``intervention`` is entered around this measurement only (and always left), as in :func:`evaluate_mcq`.
    """
    with as_intervention(intervention, model):
        return _perplexity(model, tokenizer, texts, batch_size)


def _perplexity(model: nn.Module, tokenizer: Any, texts: Sequence[str], batch_size: int) -> float:
    _check_batch_size(batch_size)
    device, limit, pad = input_device(model), _max_length(model), pad_id(tokenizer)
    encoded = [ids[:limit] for ids in (encode(tokenizer, t) for t in texts) if len(ids) > 1]
    if not encoded:
        raise DataError("no text of at least two tokens to measure perplexity on")
    encoded = encoded[my_rows(len(encoded))]  # this rank's share under torchrun
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(encoded), batch_size):
            ids, mask = pad_batch(encoded[start : start + batch_size], pad)
            ids, mask = ids.to(device), mask.to(device)
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            keep = mask[:, 1:].to(nll.dtype)
            total += float((nll * keep).sum())
            count += int(keep.sum())
    finally:
        model.train(was_training)
    sums = all_reduce_sum(torch.tensor([total, float(count)], dtype=torch.float64))
    return math.exp(float(sums[0]) / float(sums[1]))


def _check_items(items: Sequence[Any], name: str) -> None:
    """Items built in Python get the checks a file's rows get in ``read_mcq``."""
    for i, item in enumerate(items):
        if not isinstance(item, MCQItem):
            raise DataError(f"{name}: item {i} is a {type(item).__name__}, not an MCQItem (read files with read_mcq)")
        if len(item.choices) < 2 or len(item.choices) > len(LETTERS):
            raise DataError(f"{name}: item {i} has {len(item.choices)} choices; 2 to {len(LETTERS)} are supported")
        answer, n = item.answer, len(item.choices)
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < n:
            raise DataError(f"{name}: item {i} has answer {answer!r}; it must index its {n} choices")


def _check_batch_size(batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")


__all__ = [
    "LETTERS",
    "Format",
    "MCQItem",
    "MCQResult",
    "Prediction",
    "encode_pair",
    "evaluate_mcq",
    "letter_prompt",
    "loglikelihoods",
    "perplexity",
    "read_mcq",
]
