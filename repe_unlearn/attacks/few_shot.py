"""Few-shot prompting: put k solved questions about *other* entities before each question (does it come back?).

A model that only hides a fact may answer once the prompt shows it the task solved a few times. The examples
must never be about an entity that is evaluated, or the prompt would simply contain the answer: they are
drawn from a separate pool, and any overlap of entities between the pool and the evaluated items is refused
(both need the ``entity`` field the toy world's question files carry).
"""

import random
import time
from collections.abc import Callable, Sequence

from ..data import LETTERS, MCQItem, letter_prompt
from ..errors import ConfigError
from .result import AttackResult, CurvePoint

EvaluateItems = Callable[[list[MCQItem]], dict[str, float]]


def solved(item: MCQItem, format: str) -> str:
    """One worked example: the question and its right answer, as the evaluation would score it."""
    if format == "cloze":
        return f"{item.question.strip()} {item.choices[item.answer]}.\n"
    if format == "letter":
        return f"{letter_prompt(item)} {LETTERS[item.answer]}\n\n"
    raise ConfigError(f"unknown format {format!r}; valid: letter, cloze")


def check_disjoint(items: Sequence[MCQItem], shots: Sequence[MCQItem]) -> None:
    """Refuse examples whose entities are unknown or are among the evaluated items' entities."""
    unnamed = [i for i in (*items, *shots) if i.entity is None]
    if unnamed:
        raise ConfigError(
            f"few-shot examples and evaluated items need an 'entity' field (which entity each question is about), "
            f"to keep the examples off the evaluated entities; {unnamed[0].question!r} has none"
        )
    shared = sorted({i.entity for i in items} & {s.entity for s in shots})  # type: ignore[type-var]
    if shared:
        raise ConfigError(
            f"the few-shot pool asks about {len(shared)} evaluated entities ({', '.join(map(str, shared[:3]))}): "
            "its examples would give the answers away; use a pool about other entities"
        )


def with_few_shot(
    items: Sequence[MCQItem], shots: Sequence[MCQItem], k: int, *, format: str, seed: int = 0
) -> list[MCQItem]:
    """Each item with ``k`` solved examples from ``shots`` (drawn per item, seeded) written before its question."""
    check_disjoint(items, shots)
    if not 1 <= k <= len(shots):
        raise ConfigError(f"k must be between 1 and the pool's {len(shots)} examples, got {k}")
    rng = random.Random(seed)
    out = []
    for item in items:
        prefix = "".join(solved(shot, format) for shot in rng.sample(list(shots), k))
        out.append(MCQItem(prefix + item.question.strip(), item.choices, item.answer, item.entity))
    return out


def few_shot(
    items: Sequence[MCQItem],
    shots: Sequence[MCQItem],
    *,
    evaluate: EvaluateItems,
    format: str,
    ks: Sequence[int] = (1, 3, 5),
    seed: int = 0,
) -> list[AttackResult]:
    """Evaluate ``items`` as they are and with ``k`` solved examples before each, for each ``k`` of ``ks``."""
    check_disjoint(items, shots)
    before = evaluate(list(items))
    results = []
    for k in ks:
        start = time.perf_counter()
        after = evaluate(with_few_shot(items, shots, k, format=format, seed=seed))
        details = {"k": k, "pool": len(shots), "seconds": time.perf_counter() - start}
        results.append(
            AttackResult(f"few-shot-{k}", before, after, [CurvePoint(0, before), CurvePoint(k, after)], details)
        )
    return results


__all__ = ["check_disjoint", "few_shot", "solved", "with_few_shot"]
