"""repe_unlearn: activation editing for HuggingFace causal LMs with hooks, and RMU unlearning built on it.

The public surface is what this file exports; everything else is private. nnsight support lives in
``repe_unlearn.nnsight_adapter`` and is imported only when asked for (``import nnsight`` patches globally).
"""

from .cache import ActivationCache, collect, collect_pooled, last_token, masked_mean, record
from .data import read_texts, tokenize_batches
from .errors import (
    ArchitectureError,
    ConfigError,
    DataError,
    FormatError,
    HookPointError,
    LayerNotFoundError,
    RepeUnlearnError,
    ShapeError,
    TrainingError,
)
from .hooks import HookContext, HookFn, HookHandle, active_hooks, attach, remove_hooks
from .models import (
    HOOK_POINTS,
    Architecture,
    HookPoint,
    architecture,
    d_model,
    decoder_layers,
    mlp_down_proj,
    n_layers,
    register_architecture,
    resolve_layer,
    supported_model_types,
)
from .vectors import ControlVector, ablate_direction

__version__ = "0.1.0"

__all__ = [
    "HOOK_POINTS",
    "ActivationCache",
    "Architecture",
    "ArchitectureError",
    "ConfigError",
    "ControlVector",
    "DataError",
    "FormatError",
    "HookContext",
    "HookFn",
    "HookHandle",
    "HookPoint",
    "HookPointError",
    "LayerNotFoundError",
    "RepeUnlearnError",
    "ShapeError",
    "TrainingError",
    "__version__",
    "ablate_direction",
    "active_hooks",
    "architecture",
    "attach",
    "collect",
    "collect_pooled",
    "d_model",
    "decoder_layers",
    "last_token",
    "masked_mean",
    "mlp_down_proj",
    "n_layers",
    "read_texts",
    "record",
    "register_architecture",
    "remove_hooks",
    "resolve_layer",
    "supported_model_types",
    "tokenize_batches",
]
