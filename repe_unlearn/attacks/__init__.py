"""Attacks on unlearned models: relearning, direction ablation, adversarial suffixes, quantization, few-shot
prompting, fine-tuning on unrelated text (does the knowledge return?).

Each takes an ``evaluate`` callable (or returns what to evaluate with), so the CLI and the demo decide how to
score: the attacks never import the evaluator.
"""

from .ablate import ablate, mean_difference
from .few_shot import few_shot, with_few_shot
from .quantize import quantize, quantize_weight, quantized
from .relearn import relearn
from .result import AttackResult, CurvePoint
from .suffix import Suffix, gcg_suffix, with_suffix
from .unrelated import unrelated

__all__ = [
    "AttackResult",
    "CurvePoint",
    "Suffix",
    "ablate",
    "few_shot",
    "gcg_suffix",
    "mean_difference",
    "quantize",
    "quantize_weight",
    "quantized",
    "relearn",
    "unrelated",
    "with_few_shot",
    "with_suffix",
]
