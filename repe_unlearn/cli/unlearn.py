"""``repe-unlearn unlearn`` and ``apply-delta``."""

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError
from ._common import (
    add_config_flags,
    add_model_flags,
    config_from_args,
    distinct_inputs,
    input_paths,
    load_model,
    load_tokenizer,
)


def _read_corpora(paths: Sequence[str], text_field: str, raw: Sequence[str] = ()) -> list[list[str]]:
    from .._reading import read_texts

    corpora = []
    for path in paths:
        texts = read_texts(path, text_field=text_field, raw_lines=path in raw)
        if not texts:
            raise ConfigError(f"corpus {path} holds no text")
        corpora.append(texts)
    return corpora


def _our_step_log(path: str) -> bool:
    """Whether ``path`` is a step log this tool wrote (a regular file of JSON lines with a "step"), so that
    --overwrite may replace it; anything else is the user's and is never replaced."""
    if os.path.islink(path) or not os.path.isfile(path):
        return False
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                if not isinstance(record, dict) or "step" not in record:
                    return False
    except (OSError, ValueError):
        return False
    return True


def cmd_unlearn(args: argparse.Namespace) -> int:
    """Unlearn with RMU: misdirect layer ℓ on forget corpora, preserve it on retain corpora."""
    from .._loading import checkpoint_depth
    from .._outputs import OutputDir, check_output_file
    from ..rmu import PRESETS, RMUConfig
    from ..rmu.config import ADVERSARIAL, LAYER_FOLLOWERS, METHOD_FIELDS, preset_values, with_overrides

    method = getattr(args, "method", None) or "rmu"
    unread = [name for name, methods in METHOD_FIELDS.items() if hasattr(args, name) and method not in methods]
    if unread:  # given explicitly, even at its default value: it would do nothing
        flag = "--" + unread[0].replace("_", "-")
        raise ConfigError(
            f"{flag} applies to {' and '.join(METHOD_FIELDS[unread[0]])} only; this run's method is {method}, "
            f"which would ignore it (pass --method, or drop {flag})"
        )
    if hasattr(args, "steering_coeff") and hasattr(args, "adaptive_coeff"):
        raise ConfigError(
            "--steering-coeff and --adaptive-coeff are alternatives (β sets c = β x the frozen norm in place of "
            "the given c); give one"
        )
    config = config_from_args(args, RMUConfig, PRESETS, resolve=preset_values, merge=with_overrides)
    preset_name = getattr(args, "preset", None)
    if preset_name is not None and hasattr(args, "steering_coeff"):
        beta = preset_values(preset_name, method).get("adaptive_coeff")
        if beta is not None:
            print(
                f"note: --steering-coeff replaces --preset {preset_name}'s adaptive coefficient β={beta:g} "
                "(c = β x the frozen norm)",
                file=sys.stderr,
            )
    if preset_name is not None and hasattr(args, "layer"):
        values = preset_values(preset_name, method)
        moved = [n for n in LAYER_FOLLOWERS if n in values and not hasattr(args, n) and args.layer != values["layer"]]
        if moved:
            flags = " and ".join("--" + n.replace("_", "-") for n in moved)
            print(
                f"note: --layer {args.layer} replaces --preset {preset_name}'s layer {values['layer']}, so its "
                f"{flags} move with it (defaults around the given layer); give {flags} to choose them",
                file=sys.stderr,
            )
    if len(args.retain) not in (1, len(args.forget)):
        raise ConfigError(f"{len(args.forget)} --forget corpora but {len(args.retain)} --retain; give 1 or one each")
    distinct_inputs(
        *(("--forget and --retain", forget, retain) for forget in args.forget for retain in args.retain),
        why="RMU would push and preserve the same activations",
    )
    inputs = input_paths(args)
    # every output checked before any compute
    out = OutputDir(args.out, overwrite=args.overwrite, inputs=inputs, kind="unlearned model")
    out.check_file(args.log_jsonl, "--log-jsonl")
    check_output_file(args.log_jsonl, "--log-jsonl", overwrite=args.overwrite, inputs=inputs)
    partial_path = args.log_jsonl + ".partial" if args.log_jsonl else None
    if partial_path and os.path.lexists(partial_path) and not (args.overwrite and _our_step_log(partial_path)):
        raise FileExistsError(
            f"{partial_path} exists (a failed run's step log: the log is written there first); move it"
            + (", or pass --overwrite to replace it" if _our_step_log(partial_path) else "")
        )
    log_path = Path(args.log_jsonl) if args.log_jsonl else None
    raw = list(args.raw_lines or [])
    unknown = [path for path in raw if path not in [*args.forget, *args.retain]]
    if unknown:
        raise ConfigError(f"--raw-lines {unknown[0]} names no --forget or --retain corpus; give one of those paths")
    forget = _read_corpora(args.forget, args.text_field, raw)
    retain = _read_corpora(args.retain, args.text_field, raw)
    retain_names = list(args.retain)
    if len(retain) == 1 and len(forget) > 1:
        retain, retain_names = retain * len(forget), retain_names * len(forget)
    from .._distributed import is_main  # torch: once the flags, outputs and corpora are known to be good
    from ..rmu import load_directions, save_unlearned, unlearn
    from ..rmu.artifacts import check_streamable
    from ..rmu.trainer import StepLog

    # the loss stops at layer ℓ: build layers 0..ℓ only, read from the checkpoint tensor by tensor (an adversary's
    # loss needs the logits, so rmu-lat and adv-rmu load the whole model)
    # layers counted from the last (the toy preset's) are counted on the checkpoint's depth, before it is loaded
    depth = checkpoint_depth(args.model, trust_remote_code=args.trust_remote_code)
    try:
        config = config.resolved(depth)
    except ConfigError as exc:  # say which of the layers came from the preset, not typed by the user
        given = [n for n in ("layer", *LAYER_FOLLOWERS) if hasattr(args, n)]
        from_preset = [
            f"{n.replace('_', ' ')} {_layers_text(getattr(config, n))}"
            for n in ("layer", *LAYER_FOLLOWERS)
            if preset_name is not None and n not in given and getattr(config, n) is not None
        ]
        if not from_preset:
            raise
        raise ConfigError(
            f"{exc}; --preset {preset_name} set {', '.join(from_preset)}: give --layer / --update-layers that fit "
            f"this model"
        ) from None
    _note_letter_layers(args.model, config.layer)
    first_layers = None if args.full_model or config.method in ADVERSARIAL else config.layer + 1
    model = load_model(
        args.model,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        first_layers=first_layers,
    )
    check_streamable(model, config, args.model)
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    directions = None
    if args.control_vectors:
        from .._models import d_model

        directions = load_directions(args.control_vectors, len(forget), d_model(model))
    # the step log streams to LOG.partial (tail -f works) and becomes LOG only when the run has written its
    # result: a failed or interrupted run leaves no half-written LOG, and its .partial says what happened
    partial = log_path.with_name(log_path.name + ".partial") if log_path is not None else None
    log_file = partial.open("w") if partial is not None and is_main() else None

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
    except KeyboardInterrupt:  # "nothing was written": the partial log goes too (a failed run keeps its own)
        if log_file is not None:
            log_file.close()
            Path(log_file.name).unlink(missing_ok=True)
        raise
    except BaseException:  # a failed run keeps its partial log when it says something (the steps it made)
        if log_file is not None:
            log_file.close()
            if Path(log_file.name).stat().st_size == 0:
                Path(log_file.name).unlink(missing_ok=True)
        raise
    finally:
        if log_file is not None:
            log_file.close()
    seconds = time.perf_counter() - start
    if not is_main():  # data parallel: rank 0 alone writes and reports
        return 0
    save_unlearned(
        out,
        model,
        tokenizer,
        result,
        overwrite=args.overwrite,
        extra={
            "seconds": seconds,
            "base_model": str(Path(args.model).resolve()),
            "forget": args.forget,
            "retain": args.retain,
        },
        tokenizer_source=args.model,
        base=args.model,
    )
    if partial is not None and log_path is not None:
        os.replace(partial, log_path)
    last = result.history[-1]
    norms = ", ".join(f"{n:.4g}" for n in result.frozen_norms)
    coeffs = ", ".join(f"{c:.4g}" for c in result.coefficients)
    method = "RMU" if config.method == "rmu" else config.method
    print(f"{method}: {len(result.history)} steps in {seconds:.1f} s ({seconds / len(result.history):.3f} s/step)")
    print(f"  steered layer {config.layer}; updated {', '.join(result.parameter_names)}")
    if config.method in ADVERSARIAL:
        print(f"  adversary at layer {config.adversary_layer} (L2 bound {config.adv_epsilon:g})")
    print(f"  frozen norm at layer {config.layer}: {norms}; steering coefficient c: {coeffs}")
    print(f"  last step: forget loss {last.forget_loss:.4g}, retain loss {last.retain_loss:.4g}")
    print(f"  wrote {args.out}")
    return 0


def cmd_apply_delta(args: argparse.Namespace) -> int:
    """Rebuild an unlearned model from its base model and an rmu_delta.safetensors file."""
    from .._outputs import OutputDir

    out = OutputDir(args.out, overwrite=args.overwrite, inputs=input_paths(args), kind="unlearned model")
    from ..rmu import apply_delta  # torch: once the output is known to be good
    from ..rmu.artifacts import apply_delta_to_checkpoint, save_tokenizer

    tokenizer = None
    try:
        tokenizer = load_tokenizer(args.base, trust_remote_code=args.trust_remote_code)
    except ConfigError:
        print(f"note: {args.base} has no tokenizer; writing the model only", file=sys.stderr)
    names: list[str] = []

    def fill(tmp: Path) -> None:
        # a safetensors base is streamed with the delta's tensors swapped in; another is loaded and saved
        streamed = apply_delta_to_checkpoint(args.base, args.delta, tmp)
        if streamed is None:
            model = load_model(args.base, trust_remote_code=args.trust_remote_code)
            names.extend(apply_delta(model, args.delta))
            model.save_pretrained(tmp)
        else:
            names.extend(streamed)
        if tokenizer is not None:
            save_tokenizer(tmp, tokenizer, args.base, trust_remote_code=args.trust_remote_code)

    out.write(fill)
    print(f"applied {len(names)} tensors ({', '.join(names)}) to {args.base}; wrote {args.out}")
    return 0


def _layers_text(value: int | tuple[int, ...]) -> str:
    return ",".join(str(i) for i in value) if isinstance(value, tuple) else str(value)


def _note_letter_layers(model: str, layer: int) -> None:
    """A note on stderr when ℓ is one of the letter layers `toy letters` stacked on a model: the facts are held in
    the layers below them (layers counted from the last, as the toy preset counts, land there)."""
    config = Path(model) / "config.json"
    try:
        record = json.loads(config.read_text()).get("repe_unlearn_letters") if config.is_file() else None
    except (OSError, ValueError):
        return
    if isinstance(record, dict) and isinstance(record.get("frozen_layers"), int) and layer >= record["frozen_layers"]:
        frozen = record["frozen_layers"]
        print(
            f"note: layer {layer} is one of the letter layers `toy letters` stacked on this model (layers {frozen} and "
            f"up); the facts are held in layers 0-{frozen - 1}: to steer there as on the model alone, pass "
            f"--layer {frozen - 2} (the demo does)",
            file=sys.stderr,
        )


def add_unlearn_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register ``unlearn`` and ``apply-delta``."""
    from ..rmu.config import PRESETS, RMUConfig

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
        "--full-model",
        action="store_true",
        help="load every layer and the LM head (default: layers 0..ℓ only, read tensor by tensor, and the output "
        "streamed from the base checkpoint; needs safetensors weights named as transformers names them)",
    )
    unlearn.add_argument(
        "--control-vectors",
        metavar="FILE",
        help='safetensors with one vector per forget corpus under keys "0", "1", ...',
    )
    unlearn.add_argument("--text-field", default="text", help="JSONL/parquet field holding the text")
    unlearn.add_argument(
        "--raw-lines",
        action="append",
        metavar="FILE",
        help="read this --forget/--retain corpus as raw lines, newline and any JSON syntax included, as the "
        "published code reads every corpus but the bio one; repeatable",
    )
    unlearn.add_argument("--log-jsonl", metavar="FILE", help="write one JSON line per step")
    unlearn.add_argument("--overwrite", action="store_true", help="replace an existing --out / --log-jsonl")
    add_model_flags(unlearn)
    add_config_flags(unlearn, RMUConfig, presets=True)
    unlearn.set_defaults(func=cmd_unlearn)

    apply = sub.add_parser("apply-delta", help=cmd_apply_delta.__doc__, description=cmd_apply_delta.__doc__)
    apply.add_argument("--base", required=True, help="the base model directory the delta was made from")
    apply.add_argument("--delta", required=True, help="rmu_delta.safetensors")
    apply.add_argument("--out", required=True, help="output model directory")
    apply.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    apply.add_argument("--trust-remote-code", action="store_true", help="allow model code from the model dir")
    apply.set_defaults(func=cmd_apply_delta)
