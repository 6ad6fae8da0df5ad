"""jaxtyping aliases with the project's one vocabulary of tensor dimensions.

Dimensions: ``batch`` (examples), ``pos`` (positions of the activations in hand), ``seq`` (positions of the
whole attention mask, which is longer than ``pos`` during cached generation), ``d_model``, ``layer``.
Shapes are checked at test time only (pytest's ``--jaxtyping-packages``), never in production.
"""

from jaxtyping import Float, Shaped
from torch import Tensor

Activations = Float[Tensor, "batch pos d_model"]
Pooled = Float[Tensor, "batch d_model"]
Stacked = Float[Tensor, "layer batch pos d_model"]
Direction = Float[Tensor, " d_model"]
# a cache of any hook point: [batch pos d_model], [batch pos head d_head] (attn_heads), [batch head query key]
CachedStack = Float[Tensor, "layer batch *rest"]
CachedPooled = Float[Tensor, "batch *width"]  # [batch d_model], or [batch head d_head] at attn_heads
AttentionMask = Shaped[Tensor, "batch seq"]

__all__ = ["Activations", "AttentionMask", "CachedPooled", "CachedStack", "Direction", "Pooled", "Stacked", "Tensor"]
