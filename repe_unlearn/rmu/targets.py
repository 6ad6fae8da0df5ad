"""RMU's misdirection targets: one unit direction u per forget corpus (the target is c·u).

Random by default (uniform on [0,1)^d from a seeded generator, normalised, as in the published code),
or given: a safetensors file with keys "0", "1", ... (one d_model vector per forget corpus), or any
:class:`~repe_unlearn.ControlVector`, whose direction at the steered layer becomes the target, which is how
RMU composes with steering.
"""

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .._io import read_safetensors, save_tensors
from .._vectors import RMU_KIND, ControlVector
from ..errors import FormatError, ShapeError


def random_directions(n_topics: int, d_model: int, seed: int) -> Tensor:
    """``[n_topics, d_model]`` unit vectors, each drawn uniform on [0,1)^d; the same seed gives the same vectors."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(n_topics, d_model, generator=generator)
    return u / u.norm(dim=1, keepdim=True)


def published_directions(n_topics: int, d_model: int, seed: int, *, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``[n_topics, d_model]`` unit vectors drawn as the published code draws them, one per topic in turn.

    The published code seeds torch (``torch.manual_seed(seed)`` and the CUDA seeds) and then draws
    ``torch.rand(1, 1, d, dtype=model.dtype, device=model.device)`` per topic and divides it by its norm, in
    that dtype. A generator of that device seeded with ``seed`` gives the same numbers as the seeded default
    generator, as long as nothing drew from it in between (the published script draws nothing before).
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    rows = []
    for _ in range(n_topics):
        u = torch.rand(1, 1, d_model, dtype=dtype, device=device, generator=generator)
        rows.append((u / torch.norm(u))[0, 0])
    return torch.stack(rows)


def _unit(vector: Tensor, what: str, d_model: int) -> Tensor:
    if vector.ndim != 1 or vector.shape[0] != d_model:
        raise ShapeError(f"{what} has shape {tuple(vector.shape)}; expected a vector of size d_model={d_model}")
    norm = vector.float().norm()
    if not torch.isfinite(norm) or norm == 0:
        raise ShapeError(f"{what} has norm {float(norm)}; it must be a finite non-zero vector")
    return vector.float() / norm


def directions_from(
    vectors: Sequence[ControlVector | Tensor], layer: int, d_model: int, *, n_layers: int | None = None
) -> Tensor:
    """Targets from tensors or ControlVectors (their direction at ``layer``), normalised to unit length.

    With ``n_layers``, a vector's negative keys count as the layers they name (``-1`` is ``n_layers - 1``),
    and directions of keys naming the same layer add up, as when the vector steers.
    """
    rows = []
    for topic, vector in enumerate(vectors):
        if isinstance(vector, ControlVector):
            keys = [k for k in vector.layers if (k % n_layers if n_layers is not None and k < 0 else k) == layer]
            if not keys:
                have = vector.layers
                raise ShapeError(f"control vector {topic} has no direction at the steered layer {layer}; it has {have}")
            vector = sum((vector[k] for k in keys[1:]), vector[keys[0]])
        rows.append(_unit(vector, f"control vector {topic}", d_model))
    return torch.stack(rows)


def load_directions(path: str | os.PathLike[str], n_topics: int, d_model: int) -> Tensor:
    """Read ``--control-vectors FILE``: keys "0".."T-1", one vector of size d_model per forget corpus."""
    tensors, _ = read_safetensors(path)
    expected = [str(i) for i in range(n_topics)]
    if sorted(tensors) != sorted(expected):
        raise FormatError(f"{path} holds keys {sorted(tensors)}; expected {expected} (one vector per forget corpus)")
    return torch.stack([_unit(tensors[key], f"{path}[{key!r}]", d_model) for key in expected])


def save_directions(
    path: str | os.PathLike[str],
    directions: Tensor,
    *,
    layer: int | None = None,
    coefficients: Sequence[float] | None = None,
    overwrite: bool = False,
) -> None:
    """Write targets in the ``--control-vectors`` format (keys "0", "1", ...), with the steered ``layer`` and
    the ``coefficients`` c used, where known: `ControlVector.load` then reads them as steering vectors."""
    tensors = {str(i): row for i, row in enumerate(directions)}
    meta: dict[str, Any] = {"kind": RMU_KIND}
    if layer is not None:
        meta["layer"] = int(layer)
    if coefficients is not None:
        meta["coefficients"] = [float(c) for c in coefficients]
    save_tensors(path, tensors, meta, overwrite=overwrite)
