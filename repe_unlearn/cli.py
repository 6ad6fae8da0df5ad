"""Command line: argparse -> library calls. The only module that prints for humans or exits.

Errors of this package become one line on stderr and exit code 2; ``--debug`` shows the traceback.
"""

import argparse
import dataclasses
import json
import sys
import time
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ConfigError, RepeUnlearnError

EXIT_USAGE = 2
DTYPES = ("float32", "bfloat16", "float16")


def _load_model(
    path: str, *, dtype: str | None = None, device: str | None = None, trust_remote_code: bool = False
) -> Any:
    directory = Path(path)
    if not (directory / "config.json").is_file():
        raise ConfigError(
            f"{path} is not a HuggingFace model directory (no config.json); this tool never downloads models"
        )
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.utils.logging.disable_progress_bar()  # one bar per weight file is noise next to ours
    # safetensors weights only: a pickled pytorch_model.bin is never loaded
    kwargs: dict[str, Any] = {"local_files_only": True, "trust_remote_code": trust_remote_code, "use_safetensors": True}
    if dtype is not None:
        kwargs["dtype"] = getattr(torch, dtype)
    if device == "auto":
        kwargs["device_map"] = "auto"
    model = AutoModelForCausalLM.from_pretrained(directory, **kwargs)
    if device not in (None, "auto"):
        model = model.to(device)
    return model


def _load_tokenizer(path: str, *, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load a tokenizer from {path}: {str(exc).splitlines()[0]}") from None


def _inspect_model(path: str) -> dict[str, object]:
    from torch import nn

    from .models import (
        HOOK_POINTS,
        architecture,
        d_model,
        find_layers_path,
        hook_module,
        mlp_down_proj,
        n_layers,
        parameter_name,
    )

    model = _load_model(path)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{path} did not load as a torch model")
    names = {id(m): name for name, m in model.named_modules()}
    hooks = {}
    for point in HOOK_POINTS:
        module, kind = hook_module(model, 0, point)
        hooks[point] = f"{kind}-hook on {names[id(module)]}"
    return {
        "model": type(model).__name__,
        "model_type": getattr(getattr(model, "config", None), "model_type", None),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "layers_path": find_layers_path(model),
        "n_layers": n_layers(model),
        "d_model": d_model(model),
        "hook_points_layer_0": hooks,
        "mlp_down_proj_layer_0": parameter_name(model, mlp_down_proj(model, 0)),
        "architecture": vars(architecture(model)),
    }


def _inspect_file(path: str) -> dict[str, object]:
    from .cache import ActivationCache
    from .io import read_safetensors
    from .vectors import ControlVector

    tensors, header = read_safetensors(path)
    try:
        meta = json.loads(header.get("repe_unlearn", "{}"))
    except json.JSONDecodeError:
        meta = {}
    kind = meta.get("kind", "safetensors file (not written by repe_unlearn)")
    info: dict[str, object] = {"kind": kind}
    if kind == "control_vector":
        info["summary"] = repr(ControlVector.load(path))
    elif kind == "activation_cache":
        info["summary"] = repr(ActivationCache.load(path))
    info["tensors"] = {name: f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}" for name, t in tensors.items()}
    info["metadata"] = {k: v for k, v in meta.items() if k != "kind"}
    return info


def cmd_inspect(args: argparse.Namespace) -> int:
    """Describe a model directory (layers, hook points, MLP projections) or a saved vector/cache file."""
    path = Path(args.path)
    if not path.exists():
        raise ConfigError(f"{path} does not exist; give a model directory or a .safetensors file")
    info = _inspect_model(str(path)) if path.is_dir() else _inspect_file(str(path))
    print(json.dumps(info, indent=2, default=str))
    return 0


def _flag_type(annotation: Any) -> tuple[Any, bool]:
    """(element parser, is_sequence) for a config field's annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if typing.get_origin(annotation) is tuple:
        return typing.get_args(annotation)[0], True
    return annotation, False


def _comma_list(element: Any) -> Any:
    def parse(text: str) -> list[Any]:
        try:
            return [element(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {element.__name__}s, got {text!r}") from None

    return parse


def add_config_flags(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One flag per dataclass field; defaults are shown from the dataclass and applied there, not here."""
    hints = typing.get_type_hints(config_class)
    group = parser.add_argument_group(f"{config_class.__name__} (explicit flags override --preset)")
    for f in dataclasses.fields(config_class):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if "default" not in help_text:
            shown = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
            help_text += f" (default: {shown})"
        element, is_sequence = _flag_type(hints[f.name])
        if element is bool:
            group.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=help_text)
        elif is_sequence:
            group.add_argument(
                flag,
                type=_comma_list(element),
                action="append",
                default=argparse.SUPPRESS,
                metavar="V[,V...]",
                help=help_text + "; repeatable",
            )
        else:
            group.add_argument(flag, type=element, default=argparse.SUPPRESS, metavar=f.name.upper(), help=help_text)


def config_from_args(args: argparse.Namespace, config_class: type, presets: dict[str, dict[str, Any]]) -> Any:
    """The config: the preset's values, then every flag given explicitly."""
    explicit: dict[str, Any] = {}
    for f in dataclasses.fields(config_class):
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            if isinstance(value, list):  # an append action of comma lists
                value = tuple(v for chunk in value for v in chunk)
            explicit[f.name] = value
    preset_name = getattr(args, "preset", None)
    if preset_name is not None and preset_name not in presets:
        raise ConfigError(f"unknown preset {preset_name!r}; valid: {', '.join(presets)}")
    base = presets[preset_name] if preset_name is not None else {}
    return config_class(**{**base, **explicit})


def _read_corpora(paths: Sequence[str], text_field: str) -> list[list[str]]:
    from .data import read_texts

    corpora = []
    for path in paths:
        texts = read_texts(path, text_field=text_field)
        if not texts:
            raise ConfigError(f"corpus {path} holds no text")
        corpora.append(texts)
    return corpora


def cmd_unlearn(args: argparse.Namespace) -> int:
    """Unlearn with RMU: misdirect layer ℓ on forget corpora, preserve it on retain corpora."""
    from .rmu import PRESETS, RMUConfig, load_directions, save_unlearned, unlearn
    from .rmu.artifacts import prepare_output
    from .rmu.trainer import StepLog

    config = config_from_args(args, RMUConfig, PRESETS)
    if len(args.retain) not in (1, len(args.forget)):
        raise ConfigError(f"{len(args.forget)} --forget corpora but {len(args.retain)} --retain; give 1 or one each")
    out = Path(args.out)
    prepare_output(out, overwrite=args.overwrite)
    log_path = Path(args.log_jsonl) if args.log_jsonl else None
    if log_path is not None and log_path.exists() and not args.overwrite:
        raise FileExistsError(f"{log_path} exists; pass --overwrite to replace it")
    forget = _read_corpora(args.forget, args.text_field)
    retain = _read_corpora(args.retain, args.text_field)
    retain_names = list(args.retain)
    if len(retain) == 1 and len(forget) > 1:
        retain, retain_names = retain * len(forget), retain_names * len(forget)
    model = _load_model(args.model, dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code)
    tokenizer = _load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    directions = None
    if args.control_vectors:
        from .models import d_model

        directions = load_directions(args.control_vectors, len(forget), d_model(model))
    log_file = log_path.open("w") if log_path is not None else None

    def on_step(log: StepLog) -> None:
        if log_file is not None:
            log_file.write(json.dumps(log.to_dict()) + "\n")
            log_file.flush()

    start = time.perf_counter()
    try:
        result = unlearn(
            model,
            tokenizer,
            forget,
            retain,
            config,
            control_vectors=directions,
            forget_names=args.forget,
            retain_names=retain_names,
            on_step=on_step,
        )
    finally:
        if log_file is not None:
            log_file.close()
    seconds = time.perf_counter() - start
    save_unlearned(
        out,
        model,
        tokenizer,
        result,
        overwrite=args.overwrite,
        extra={"seconds": seconds, "base_model": str(args.model), "forget": args.forget, "retain": args.retain},
    )
    last = result.history[-1]
    norms = ", ".join(f"{n:.4g}" for n in result.frozen_norms)
    coeffs = ", ".join(f"{c:.4g}" for c in result.coefficients)
    print(f"RMU: {len(result.history)} steps in {seconds:.1f} s ({seconds / len(result.history):.3f} s/step)")
    print(f"  steered layer {config.layer}; updated {', '.join(result.parameter_names)}")
    print(f"  frozen norm at layer {config.layer}: {norms}; steering coefficient c: {coeffs}")
    print(f"  last step: forget loss {last.forget_loss:.4g}, retain loss {last.retain_loss:.4g}")
    print(f"  wrote {out}")
    return 0


def cmd_apply_delta(args: argparse.Namespace) -> int:
    """Rebuild an unlearned model from its base model and an rmu_delta.safetensors file."""
    from .rmu import apply_delta
    from .rmu.artifacts import prepare_output, write_atomically

    prepare_output(Path(args.out), overwrite=args.overwrite)
    model = _load_model(args.base, trust_remote_code=args.trust_remote_code)
    names = apply_delta(model, args.delta)
    tokenizer = None
    try:
        tokenizer = _load_tokenizer(args.base, trust_remote_code=args.trust_remote_code)
    except ConfigError:
        print(f"note: {args.base} has no tokenizer; writing the model only", file=sys.stderr)

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)

    write_atomically(args.out, fill, overwrite=args.overwrite)
    print(f"applied {len(names)} tensors ({', '.join(names)}) to {args.base}; wrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``repe-unlearn`` argument parser (docs generate the CLI reference from it)."""
    parser = argparse.ArgumentParser(
        prog="repe-unlearn",
        description="Activation editing with hooks for HuggingFace causal LMs, and RMU unlearning built on it.",
    )
    parser.add_argument("--version", action="version", version=f"repe-unlearn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    inspect = sub.add_parser("inspect", help=cmd_inspect.__doc__, description=cmd_inspect.__doc__)
    inspect.add_argument("path", help="a local HuggingFace model directory, or a vector/cache .safetensors file")
    inspect.set_defaults(func=cmd_inspect)

    from .rmu import PRESETS, RMUConfig

    unlearn = sub.add_parser("unlearn", help=cmd_unlearn.__doc__, description=cmd_unlearn.__doc__)
    unlearn.add_argument("--model", required=True, help="local HuggingFace model directory (with its tokenizer)")
    unlearn.add_argument(
        "--forget",
        required=True,
        action="append",
        metavar="FILE",
        help="forget corpus (JSONL with 'text', plain text, parquet, datasets dir); repeatable",
    )
    unlearn.add_argument(
        "--retain",
        required=True,
        action="append",
        metavar="FILE",
        help="retain corpus: one per --forget, or one for all",
    )
    unlearn.add_argument("--out", required=True, help="output directory (refused if it exists and is not empty)")
    unlearn.add_argument("--preset", choices=sorted(PRESETS), help="a named set of hyperparameters")
    unlearn.add_argument(
        "--control-vectors",
        metavar="FILE",
        help='safetensors with one vector per forget corpus under keys "0", "1", ...',
    )
    unlearn.add_argument("--text-field", default="text", help="JSONL/parquet field holding the text")
    unlearn.add_argument("--dtype", choices=DTYPES, help="load the model in this dtype (default: as saved)")
    unlearn.add_argument("--device", help="cpu, cuda, cuda:1 ... or auto (device_map='auto' across devices)")
    unlearn.add_argument("--log-jsonl", metavar="FILE", help="write one JSON line per step")
    unlearn.add_argument("--overwrite", action="store_true", help="replace an existing --out / --log-jsonl")
    unlearn.add_argument("--trust-remote-code", action="store_true", help="allow model code from the model dir")
    add_config_flags(unlearn, RMUConfig)
    unlearn.set_defaults(func=cmd_unlearn)

    apply = sub.add_parser("apply-delta", help=cmd_apply_delta.__doc__, description=cmd_apply_delta.__doc__)
    apply.add_argument("--base", required=True, help="the base model directory the delta was made from")
    apply.add_argument("--delta", required=True, help="rmu_delta.safetensors")
    apply.add_argument("--out", required=True, help="output model directory")
    apply.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    apply.add_argument("--trust-remote-code", action="store_true", help="allow model code from the model dir")
    apply.set_defaults(func=cmd_apply_delta)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``repe-unlearn`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        code: int = args.func(args)
        return code
    except (RepeUnlearnError, FileNotFoundError, FileExistsError) as exc:
        if args.debug:
            raise
        print(f"repe-unlearn: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def entry() -> None:
    """Console-script wrapper: exit with :func:`main`'s code."""
    sys.exit(main())
