"""What never changes across RMU's epochs: the input of the first updated layer, and the frozen h_ℓ.

Layers below the first updated layer are frozen, so on a given batch their output is the same in every
epoch; so is the frozen model's h_ℓ on a retain batch. The first epoch keeps, per batch, the arguments the
updated layers first..ℓ were called with (the first one's input, the masks and position embeddings) and,
for retain batches, the frozen h_ℓ. Later epochs run only layers first..ℓ from what was kept: the same
operations on the same inputs, so the same numbers (tested bit for bit), without the embedding, the layers
below, or the frozen replay.

Only what fits in the budget is kept; a batch that does not fit is computed in full, every epoch.
"""

from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._hooks import LayerCall


@dataclass(frozen=True)
class CachedBatch:
    """One batch's kept inputs of layers first..ℓ, its attention mask, and (retain batches) the frozen h_ℓ."""

    calls: dict[int, LayerCall]
    mask: Tensor | None
    frozen: Tensor | None


def _storage_bytes(tensors: list[Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (position embeddings are shared by every layer)."""
    seen: dict[tuple[str, int], int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[(str(t.device), storage.data_ptr())] = storage.nbytes()
    return sum(seen.values())


def available_bytes(device: torch.device) -> int:
    """Memory available now on ``device``: free CUDA memory, or the system's available RAM on the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2 * 2**30  # unknown (not Linux): assume 2 GiB


def no_dropout(model: nn.Module) -> bool:
    """Whether a pass in training mode is deterministic: no dropout module and no dropout rate in the config."""
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()):
        return False
    config = getattr(model, "config", None)
    if config is None:
        return True
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    values = text.to_dict() if hasattr(text, "to_dict") else vars(text)
    rates = [v for k, v in values.items() if ("dropout" in k or "pdrop" in k) and isinstance(v, (int, float))]
    return all(not r for r in rates)


class EpochCache:
    """Kept batches, keyed by (which, topic, index), within a byte budget."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self.batches: dict[Hashable, CachedBatch] = {}
        self.hits = 0

    def get(self, key: Hashable) -> CachedBatch | None:
        found = self.batches.get(key)
        if found is not None:
            self.hits += 1
        return found

    def offer(
        self, key: Hashable, calls: Mapping[int, LayerCall], first: int, mask: Tensor | None, frozen: Tensor | None
    ) -> bool:
        """Keep this batch if it fits in what is left of the budget; returns whether it was kept."""
        if key in self.batches:
            return True
        kept = {i: call.kept(with_hidden_states=i == first) for i, call in calls.items()}
        tensors = [t for call in kept.values() for t in call.tensors()]
        tensors += [t for t in (mask, frozen) if t is not None]
        size = _storage_bytes(tensors)
        if self.used + size > self.budget:
            return False
        self.used += size
        self.batches[key] = CachedBatch(
            kept, None if mask is None else mask.detach(), None if frozen is None else frozen.detach()
        )
        return True


__all__ = ["CachedBatch", "EpochCache", "available_bytes", "no_dropout"]
