"""RMU (Representation Misdirection for Unlearning, Li et al. 2024) on the intervention layer.

``unlearn(model, tokenizer, forget, retain, config)`` edits the model in place and returns an
:class:`RMUResult`; ``save_unlearned`` writes the model, the delta and the control vectors;
``apply_delta`` rebuilds an unlearned model from its base.
"""

from .artifacts import apply_delta, base_fingerprint, load_delta, save_delta, save_unlearned
from .config import PRESETS, RMUConfig, preset
from .reference import reference_rmu
from .targets import directions_from, load_directions, random_directions, save_directions
from .trainer import RMUResult, StepLog, make_batches, masked_mse, parameter_names, schedule, train, unlearn

__all__ = [
    "PRESETS",
    "RMUConfig",
    "RMUResult",
    "StepLog",
    "apply_delta",
    "base_fingerprint",
    "directions_from",
    "load_delta",
    "load_directions",
    "make_batches",
    "masked_mse",
    "parameter_names",
    "preset",
    "random_directions",
    "reference_rmu",
    "save_delta",
    "save_directions",
    "save_unlearned",
    "schedule",
    "train",
    "unlearn",
]
