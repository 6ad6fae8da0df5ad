"""Safetensors checkpoints read and written tensor by tensor, and models built from their first layers only.

A model directory holds ``model.safetensors``, or shards named by ``model.safetensors.index.json``. Each file
is an 8-byte little-endian header length, a JSON header giving every tensor's dtype, shape and byte range,
then the bytes. So:

- :class:`Checkpoint` reads the headers only, and one tensor at a time when asked;
- :func:`write_patched` writes a copy of a checkpoint with some tensors replaced: each file is streamed in
  chunks and the replaced tensors' byte ranges are overwritten, so the copy has the base's exact layout,
  headers and bytes elsewhere, and memory holds one chunk or one tensor, never the model;
- :func:`load_first_layers` builds a causal LM with decoder layers 0..k-1 only, reading just their tensors
  (and the embeddings) from the checkpoint: no later layer, no final norm, no LM head is ever materialised.
"""

import json
import logging
import os
import shutil
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ._models import final_norm, find_layers_path
from .errors import ConfigError, FormatError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
COPIED = ("config.json", "generation_config.json")  # written beside the weights, byte for byte
_CHUNK = 64 * 2**20
_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


@dataclass(frozen=True)
class TensorLocation:
    """Where one tensor's bytes lie: its file, safetensors dtype, shape, and absolute byte range."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


def has_safetensors(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` holds safetensors weights (one file or an index of shards)."""
    return (Path(directory) / SINGLE).is_file() or (Path(directory) / INDEX).is_file()


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """A safetensors file's JSON header and the offset where its data begins."""
    try:
        with path.open("rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise FormatError(f"{path} is not a safetensors file (shorter than its 8-byte header length)")
            (size,) = struct.unpack("<Q", raw)
            if size > min(100 * 2**20, path.stat().st_size):
                raise FormatError(f"{path} is not a safetensors file (a header of {size} bytes)")
            header = json.loads(f.read(size))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise FormatError(f"{path} has a damaged safetensors header") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path} has a damaged safetensors header")
    return header, 8 + size


class Checkpoint:
    """The tensors of a safetensors model directory, located by their headers (no tensor is read)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        index = self.directory / INDEX
        self.index: Path | None = None
        if (self.directory / SINGLE).is_file():  # what transformers loads when both are there
            weight_map, names = None, [SINGLE]
        elif index.is_file():
            self.index = index
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
                raise FormatError(f"{index} is not a safetensors index (no weight_map)") from None
            names = sorted(set(weight_map.values()))
        else:
            raise FormatError(f"{self.directory} has no {SINGLE} or {INDEX}; only safetensors checkpoints stream")
        self.files = [self.directory / name for name in names]
        self.locations: dict[str, TensorLocation] = {}
        for path in self.files:
            if path.parent != self.directory or not path.is_file():
                raise FormatError(f"{index} names {path.name}, which is not a file in {self.directory}")
            header, data = read_header(path)
            size = path.stat().st_size
            for name, entry in header.items():
                if name == "__metadata__":
                    continue
                try:
                    begin, end = entry["data_offsets"]
                    location = TensorLocation(path, entry["dtype"], tuple(entry["shape"]), data + begin, data + end)
                except (KeyError, TypeError, ValueError):
                    raise FormatError(f"{path}: the header entry of {name} is damaged") from None
                if not data <= location.start <= location.end <= size:
                    raise FormatError(f"{path} is damaged: {name} lies beyond the end of the file (truncated?)")
                self.locations[name] = location
        if weight_map is not None:
            wrong = [n for n, f in weight_map.items() if n not in self.locations or self.locations[n].file.name != f]
            if wrong:
                raise FormatError(f"{index} places {wrong[0]} in a shard that does not hold it")

    def key(self, name: str, prefixes: tuple[str, ...] = ()) -> str | None:
        """The checkpoint's name for the model's parameter ``name`` (or with one of ``prefixes`` removed, as in
        checkpoints saved from the base model)."""
        if name in self.locations:
            return name
        for prefix in prefixes:
            if prefix and name.startswith(prefix + ".") and name.removeprefix(prefix + ".") in self.locations:
                return name.removeprefix(prefix + ".")
        return None

    def read(self, key: str) -> Tensor:
        """One tensor, read from its file (nothing else is)."""
        from safetensors import safe_open

        with safe_open(str(self.locations[key].file), framework="pt") as f:
            return f.get_tensor(key)

    @property
    def nbytes(self) -> int:
        """Bytes of all the tensors."""
        return sum(loc.end - loc.start for loc in self.locations.values())


def _raw_bytes(tensor: Tensor, location: TensorLocation, name: str) -> bytes:
    """``tensor`` as the bytes the checkpoint stores at ``location`` (cast to its dtype; little-endian)."""
    if location.dtype not in _DTYPES:
        raise FormatError(f"{location.file}: {name} is stored as {location.dtype}, which this writer cannot write")
    if tuple(tensor.shape) != location.shape:
        raise FormatError(f"{name} has shape {tuple(tensor.shape)}, but the base checkpoint's is {location.shape}")
    plain = tensor.detach().to(device="cpu", dtype=_DTYPES[location.dtype]).contiguous().reshape(-1)
    data = plain.view(torch.uint8).numpy().tobytes()
    if len(data) != location.end - location.start:
        size = location.end - location.start
        raise FormatError(f"{name}: {len(data)} bytes to write where the checkpoint holds {size}")
    return data


def write_patched(checkpoint: Checkpoint, out: str | os.PathLike[str], replace: Mapping[str, Tensor]) -> list[str]:
    """Write ``checkpoint``'s weights into ``out`` with the tensors of ``replace`` (checkpoint names) swapped in.

    Every file keeps the base's name, header and bytes except the replaced ranges; the index file and
    ``config.json``/``generation_config.json`` are copied byte for byte. Memory: one chunk or one tensor.
    Returns the names of the files written.
    """
    out = Path(out)
    unknown = [name for name in replace if name not in checkpoint.locations]
    if unknown:
        raise FormatError(f"the base checkpoint {checkpoint.directory} has no tensor {unknown[0]!r}")
    written = []
    for path in checkpoint.files:
        target = out / path.name
        with path.open("rb") as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
        patches = [(n, checkpoint.locations[n]) for n in replace if checkpoint.locations[n].file == path]
        if patches:
            with target.open("r+b") as dst:
                for name, location in patches:
                    dst.seek(location.start)
                    dst.write(_raw_bytes(replace[name], location, name))
        written.append(path.name)
    for name in (*([INDEX] if checkpoint.index is not None else []), *COPIED):
        if (checkpoint.directory / name).is_file():
            shutil.copyfile(checkpoint.directory / name, out / name)
            written.append(name)
    return written


class NotLoaded(nn.Module):
    """Stands where a part of the model was never loaded (the final norm, the LM head)."""

    def __init__(self, what: str, kept: int) -> None:
        super().__init__()
        self.what, self.kept = what, kept

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        raise ConfigError(
            f"this model holds decoder layers 0..{self.kept - 1} only (loaded for RMU, whose loss stops there); "
            f"its {self.what} was never loaded. Load the full model to run it to the end"
        )

    def extra_repr(self) -> str:
        return f"{self.what}: not loaded"


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report (the later layers are 'unexpected' by design)."""
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def layer_count(config: Any) -> int:
    """The number of decoder layers a transformers config declares."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    count = getattr(text, "num_hidden_layers", None)
    if not isinstance(count, int) or count < 1:
        raise ConfigError(f"the config of a {getattr(text, 'model_type', '?')} model gives no num_hidden_layers")
    return count


def truncated_config(config: Any, keep: int) -> Any:
    """A copy of ``config`` with ``keep`` decoder layers (per-layer lists, like Gemma2's ``layer_types``, cut
    alike) and tied word embeddings, so that no LM head is allocated or read."""
    import copy

    config = copy.deepcopy(config)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    total = layer_count(config)
    for key, value in list(vars(text).items()):
        if isinstance(value, list) and len(value) == total and key != "num_hidden_layers":
            setattr(text, key, value[:keep])
    text.num_hidden_layers = keep
    for cfg in {id(config): config, id(text): text}.values():
        cfg.tie_word_embeddings = True
    return config


def check_loaded(info: Mapping[str, Any], directory: str | os.PathLike[str]) -> None:
    """Refuse a load that left parameters without values (a config declaring more layers than the checkpoint
    holds, a truncated index): transformers would give them random values and only log it."""
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise FormatError(
            f"the checkpoint in {directory} holds no values for {len(missing)} parameters the config declares "
            f"({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}); is its config.json the weights' own?"
        )


def load_first_layers(
    directory: str | os.PathLike[str], keep: int, **from_pretrained: Any
) -> nn.Module | None:
    """A causal LM with decoder layers 0..keep-1 of the checkpoint in ``directory``, and nothing after them.

    Only the embeddings and those layers' tensors are read (safetensors, tensor by tensor); the final norm and
    the LM head are :class:`NotLoaded` placeholders that raise a clear error if a pass ever reaches them.
    Returns None when ``keep`` covers every layer (load the full model then). ``from_pretrained`` goes to
    ``AutoModelForCausalLM.from_pretrained`` (``dtype``, ``device_map``, ``trust_remote_code`` ...).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    trust = bool(from_pretrained.get("trust_remote_code", False))
    config = AutoConfig.from_pretrained(directory, local_files_only=True, trust_remote_code=trust)
    if keep >= layer_count(config):
        return None
    short = truncated_config(config, keep)
    with _quiet_transformers():
        model, info = AutoModelForCausalLM.from_pretrained(
            directory,
            config=short,
            local_files_only=True,
            use_safetensors=True,
            output_loading_info=True,
            **from_pretrained,
        )
    check_loaded(info, directory)
    head = model.get_output_embeddings()
    for name, child in model.named_children():
        if child is head:
            setattr(model, name, NotLoaded("LM head", keep))
    norm = final_norm(model)
    path = find_layers_path(model)
    parent = model.get_submodule(path.rpartition(".")[0]) if "." in path else model
    for name, child in parent.named_children():
        if child is norm:
            setattr(parent, name, NotLoaded("final norm", keep))
    model._repe_unlearn_partial = (keep, layer_count(config))  # type: ignore[assignment]
    return model


def partial_layers(model: nn.Module) -> tuple[int, int] | None:
    """``(kept, total)`` for a model built by :func:`load_first_layers`, else None."""
    found = getattr(model, "_repe_unlearn_partial", None)
    return found if isinstance(found, tuple) else None


__all__ = [
    "COPIED",
    "INDEX",
    "SINGLE",
    "Checkpoint",
    "NotLoaded",
    "TensorLocation",
    "check_loaded",
    "has_safetensors",
    "layer_count",
    "load_first_layers",
    "partial_layers",
    "read_header",
    "truncated_config",
    "write_patched",
]
