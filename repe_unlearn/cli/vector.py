"""``repe-unlearn vector inspect|export|import|combine``: control vectors as a common currency between tools."""

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ._steering import read_vector, split_spec

TARGETS = ("lm-eval", "gguf")


def _check_out(args: argparse.Namespace, inputs: list[str]) -> None:
    from .._outputs import check_output_file

    check_output_file(args.out, "--out", overwrite=args.overwrite, inputs=inputs)


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print a vector file's layers, norms, hook point, d_model and metadata."""
    vector = read_vector(args.file, topic=args.topic, layer=args.layer)
    record = {
        "file": args.file,
        "point": vector.point,
        "d_model": vector.d_model,
        "norms": {str(k): v for k, v in vector.norms().items()},
        "metadata": vector.metadata,
    }
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    print(f"{args.file}: {len(vector)} layer(s) at {vector.point}, d_model {vector.d_model}")
    for layer, norm in vector.norms().items():
        print(f"  layer {layer:>4}  norm {norm:.6g}")
    for key, value in vector.metadata.items():
        print(f"  {key}: {value}")
    return 0


def _meta_model(directory: str) -> Any:
    """The architecture of a model directory, without its weights (for lm-eval's hook point names)."""
    import torch
    import transformers

    if not (Path(directory) / "config.json").is_file():
        raise ConfigError(f"--model {directory} is not a HuggingFace model directory (no config.json)")
    config = transformers.AutoConfig.from_pretrained(directory, local_files_only=True)
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(config)


def cmd_export(args: argparse.Namespace) -> int:
    """Write a vector in another tool's format: lm-eval's steered .pt, or a repeng/llama.cpp GGUF file."""
    from ..interop import to_gguf, to_lm_eval_steered

    path, coeff = split_spec(args.file)
    _check_out(args, [path, *([args.model] if args.model else [])])
    vector = read_vector(path, topic=args.topic, layer=args.layer)
    if args.to == "lm-eval":
        if not args.model:
            raise ConfigError("--to lm-eval needs --model DIR: lm-eval names hook points by the model's modules")
        scale = coeff if coeff is not None else float(vector.metadata.get("coefficient", 1.0))
        written = to_lm_eval_steered(vector, _meta_model(args.model), args.out, scale)
        print(f"wrote {args.out}: {', '.join(written)} x {scale:g} (lm_eval --model steered ... steer_path={args.out})")
        print("note: lm-eval's steering file is a pickle; repe-unlearn writes it and never reads one")
    else:
        if coeff is not None:
            vector = vector * coeff
        to_gguf(vector, args.out, model_hint=args.model_hint)
        print(f"wrote {args.out}: direction.{{{','.join(map(str, vector.layers))}}} (repeng / llama.cpp GGUF)")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Read another tool's vector (a repeng/llama.cpp GGUF file) into this package's safetensors format."""
    _check_out(args, [args.file])
    if Path(args.file).suffix.lower() != ".gguf":
        raise ConfigError(
            f"{args.file}: import reads .gguf control vectors; this package's own .safetensors files load as they "
            "are, and lm-eval's .pt files (pickles) are never read"
        )
    vector = read_vector(args.file)
    vector.save(args.out, overwrite=args.overwrite)
    print(f"wrote {args.out}: {len(vector)} layer(s), d_model {vector.d_model}")
    return 0


def cmd_combine(args: argparse.Namespace) -> int:
    """A linear combination sum(COEFF x FILE) of vector files (COEFF defaults to 1), saved as one vector."""
    terms = [split_spec(spec) for spec in args.term]
    _check_out(args, [path for path, _ in terms])
    total = None
    for path, coeff in terms:
        vector = read_vector(path) * (1.0 if coeff is None else coeff)
        total = vector if total is None else total + vector
    assert total is not None  # --term is required
    if args.normalize:
        total = total.normalized()
    total.metadata = {"source": "combine", "terms": [f"{p}:{1.0 if c is None else c:g}" for p, c in terms]}
    total.save(args.out, overwrite=args.overwrite)
    print(f"wrote {args.out}: layers {total.layers}, norms " + ", ".join(f"{n:.4g}" for n in total.norms().values()))
    return 0


def add_vector_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register ``vector inspect``, ``export``, ``import`` and ``combine``."""
    vector = sub.add_parser("vector", help="inspect, convert and combine control vector files", description=__doc__)
    kinds = vector.add_subparsers(dest="vector_command", metavar="COMMAND", required=True)

    def which(p: argparse.ArgumentParser) -> None:
        p.add_argument("--topic", type=int, default=0, help="RMU files: the forget topic (default: 0)")
        p.add_argument("--layer", type=int, help="RMU files that do not record their steered layer")

    def out(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", required=True, help="the file to write")
        p.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    p = kinds.add_parser("inspect", help=cmd_inspect.__doc__, description=cmd_inspect.__doc__)
    p.add_argument("file", help="a vector file (.safetensors written by repe-unlearn, or .gguf)")
    p.add_argument("--json", action="store_true", help="print JSON")
    which(p)
    p.set_defaults(func=cmd_inspect)

    p = kinds.add_parser("export", help=cmd_export.__doc__, description=cmd_export.__doc__)
    p.add_argument("file", metavar="FILE[:COEFF]", help="the vector (COEFF default: its recorded coefficient, or 1)")
    p.add_argument("--to", required=True, choices=TARGETS, help="lm-eval: steered .pt; gguf: repeng / llama.cpp")
    p.add_argument("--model", help="lm-eval: the model directory the file will steer (for hook point names)")
    p.add_argument("--model-hint", default="llama", help="gguf: controlvector.model_hint (default: llama)")
    which(p)
    out(p)
    p.set_defaults(func=cmd_export)

    p = kinds.add_parser("import", help=cmd_import.__doc__, description=cmd_import.__doc__)
    p.add_argument("file", help="a .gguf control vector (repeng, llama.cpp)")
    out(p)
    p.set_defaults(func=cmd_import)

    p = kinds.add_parser("combine", help=cmd_combine.__doc__, description=cmd_combine.__doc__)
    p.add_argument("--term", required=True, action="append", metavar="FILE[:COEFF]", help="repeatable")
    p.add_argument("--normalize", action="store_true", help="scale each layer's result to unit norm")
    out(p)
    p.set_defaults(func=cmd_combine)


__all__ = ["add_vector_parser", "read_vector"]
