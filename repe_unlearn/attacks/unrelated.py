"""Fine-tuning on unrelated text: no forget text at all (Łucki et al. 2024: ten unrelated examples recover most).

If a few steps of ordinary fine-tuning on text that never mentions the forgotten entities bring their facts
back, the unlearning was a thin layer that any update disturbs. The training texts are checked first: one
that names an evaluated entity would be relearning on the facts themselves, and is refused.
"""

import re
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ..errors import ConfigError
from .relearn import relearn
from .result import AttackResult


def mentions(texts: Sequence[str], entities: Sequence[str]) -> list[tuple[str, str]]:
    """``(entity, text)`` for every entity each text names (whole words, any case; each name once per text)."""
    names = sorted({e for e in entities if e}, key=len, reverse=True)
    if not names:
        return []
    pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in names) + r")\b", re.IGNORECASE)
    found = []
    for text in texts:
        seen: set[str] = set()
        for match in pattern.finditer(text):
            if match.group(1).lower() not in seen:
                seen.add(match.group(1).lower())
                found.append((match.group(1), text))
    return found


def unrelated(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    entities: Sequence[str],
    evaluate: Callable[[], dict[str, float]],
    steps: int = 10,
    **relearn_options: Any,
) -> AttackResult:
    """Fine-tune ``model`` in place on ``texts``, none of which may name one of the evaluated ``entities``,
    then evaluate (as :func:`relearn`, whose options pass through)."""
    if not entities:
        raise ConfigError("give the evaluated entities: the training texts are checked against them")
    leaks = mentions(texts, entities)
    if leaks:
        entity, text = leaks[0]
        raise ConfigError(
            f"{len(leaks)} training texts name evaluated entities (first: {entity!r} in {text[:60]!r}); "
            "fine-tuning on unrelated text must not mention them"
        )
    result = relearn(model, tokenizer, texts, steps=steps, evaluate=evaluate, **relearn_options)
    result.attack = "unrelated-finetune"
    result.details["entities_checked"] = len(set(entities))
    return result


__all__ = ["mentions", "unrelated"]
