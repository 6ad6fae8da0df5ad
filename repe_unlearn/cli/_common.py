"""Shared pieces of the CLI: loading local models, model flags, flags derived from config dataclasses."""

import argparse
import dataclasses
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._loading import load_causal_lm
from ..errors import ConfigError

load_model = load_causal_lm  # what every subcommand loads models with (safetensors only, one-line errors)
DTYPES = ("float32", "bfloat16", "float16")


def load_tokenizer(path: str, *, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:  # a damaged tokenizer too
        detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise ConfigError(f"cannot load a tokenizer from {path}: {detail}") from None


def mcq_sets(paths: list[str] | None) -> dict[str, Any]:
    """The items of each ``--mcq`` file under its file stem; two files with one stem are refused (results are
    keyed by it, and one set would silently replace the other)."""
    from .._reading import read_mcq

    sets: dict[str, Any] = {}
    where: dict[str, str] = {}
    for path in paths or []:
        name = Path(path).stem
        if name in sets:
            raise ConfigError(f"--mcq {path} and {where[name]} share the name {name!r}; rename one of them")
        sets[name], where[name] = read_mcq(path), path
    return sets


def _int_at_least(text: str, least: int, wording: str) -> int:
    """``text`` as an integer of at least ``least``, or an argparse error naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {wording}, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected {wording}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a positive integer, or a clear error naming the value."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """An argparse type: an integer of 0 or more, or a clear error naming the value."""
    return _int_at_least(text, 0, "an integer of 0 or more")


def positive_float(text: str) -> float:
    """An argparse type: a positive finite number."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return value


OUTPUT_FLAGS = ("out", "json", "predictions", "log_jsonl")


def input_paths(args: argparse.Namespace) -> list[str]:
    """Every path this command reads: each argument value (or list item) that names an existing file or
    directory, except the outputs, plus the base model an unlearned ``--model`` records. Outputs are checked
    against all of them, so a new input flag is protected without being listed anywhere."""
    found: list[str] = []
    for name, value in vars(args).items():
        if name in OUTPUT_FLAGS or name == "func":
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item and os.path.exists(item):
                found.append(item)
            elif isinstance(item, str) and ":" in item and os.path.exists(item.rpartition(":")[0]):
                found.append(item.rpartition(":")[0])  # --steer FILE:COEFF
    model = getattr(args, "model", None)
    if isinstance(model, str):
        recorded = _recorded_base(model)
        if recorded is not None:
            found.append(recorded)
    return found


def distinct_inputs(
    *pairs: tuple[str, str | None, str | None], why: str = "the comparison would be meaningless"
) -> None:
    """Refuse two flags that must name different files but name the same one (``--forget`` and ``--retain``),
    also through a link or another spelling."""
    for what, a, b in pairs:
        if a is not None and b is not None and os.path.realpath(a) == os.path.realpath(b):
            raise ConfigError(f"{what} name the same file {a}; {why}")


def subject_fits_format(args: argparse.Namespace) -> None:
    """Refuse ``--subject`` with ``--format cloze``: it adds lm-eval's description line to letter prompts only."""
    if getattr(args, "subject", None) and getattr(args, "format", None) == "cloze":
        raise ConfigError(
            "--subject adds lm-eval's description line to letter-format prompts; with --format cloze it would be "
            "ignored (drop it, or use --format letter)"
        )


def note_format(paths: Sequence[str | None] | None, format: str, hint: str | None = None) -> None:
    """A note on stderr for each MCQ file whose name says the other format ("forget_cloze.jsonl" scored as letter
    questions, or "..._letter..." as cloze): the accuracy would be of the wrong question, and nothing else says
    so. ``hint`` tells how to score it as named (default: the ``--format`` flag)."""
    for path in paths or []:
        if path is None:
            continue
        words = set(re.split(r"[^a-z]+", Path(path).stem.lower()))
        named = next((kind for kind in ("cloze", "letter") if kind in words and kind != format), None)
        if named is not None and not {"cloze", "letter"} <= words:
            how = hint or f"--format {named} scores it as {named} questions"
            note = f"note: {path} is named as {named} questions but is scored in {format} format; {how}"
            print(note, file=sys.stderr)


def unique_inputs(flag: str, paths: Sequence[str] | None) -> None:
    """Refuse a repeatable flag that names one file twice (also through a link or another spelling)."""
    seen: dict[str, str] = {}
    for path in paths or ():
        real = os.path.realpath(path)
        if real in seen:
            raise ConfigError(f"{flag} names the same file twice ({seen[real]} and {path}); its data would count twice")
        seen[real] = path


def rmu_record(model_dir: str | Path) -> tuple[int | None, list[int] | None]:
    """The steered and updated layers an unlearned model's ``rmu_config.json`` records (None, None without
    one); a missing model directory or a broken file is a one-line error naming it."""
    import json

    directory = Path(model_dir)
    if not (directory / "config.json").is_file():
        raise ConfigError(f"{model_dir} is not a HuggingFace model directory (no config.json)")
    path = directory / "rmu_config.json"
    if not path.is_file():
        return None, None
    try:
        config = json.loads(path.read_text())["config"]
        layer = int(config["layer"])
        updated = config.get("update_layers") or list(range(max(0, layer - 2), layer + 1))
        return layer, [int(i) for i in updated]
    except (ValueError, KeyError, TypeError) as exc:
        why = f"{type(exc).__name__}: {exc}"
        raise ConfigError(f"{path} is not an rmu_config.json written by repe-unlearn ({why})") from None


def _recorded_base(model_dir: str) -> str | None:
    """The base model an unlearned directory names in its ``rmu_config.json``, when that directory exists."""
    import json

    record = Path(model_dir) / "rmu_config.json"
    try:
        base = json.loads(record.read_text()).get("base_model") if record.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None
    return str(base) if isinstance(base, str) and (Path(base) / "config.json").is_file() else None


def tokenizer_for(args: argparse.Namespace) -> Any:
    """The tokenizer of ``--model``, with a warning on stderr when it tokenizes a fixed sample of texts other
    than its base model's does (``--base``, else the base named in its ``rmu_config.json``): scores of two
    models whose prompts become different ids are not comparable."""
    import sys

    from .._tokenizer_files import SAMPLE, tokenization_differences

    remote = getattr(args, "trust_remote_code", False)
    tokenizer = load_tokenizer(args.model, trust_remote_code=remote)
    base = getattr(args, "base", None) or _recorded_base(args.model)
    if base is None or Path(base).resolve() == Path(args.model).resolve():
        return tokenizer
    try:
        reference = load_tokenizer(base, trust_remote_code=remote)
    except ConfigError:
        return tokenizer
    differ = tokenization_differences(tokenizer, reference)
    if differ:
        print(
            f"repe-unlearn: warning: the tokenizer of {args.model} tokenizes {len(differ)} of {len(SAMPLE)} sample "
            f"texts differently from its base {base}'s (first: {differ[0]!r}); their scores are not comparable",
            file=sys.stderr,
        )
    return tokenizer


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """--dtype, --device, --device-map and --trust-remote-code."""
    parser.add_argument("--dtype", choices=DTYPES, help="load the model in this dtype (default: as saved)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... or auto (device_map='auto' across devices)")
    parser.add_argument("--device-map", choices=["auto"], dest="device", help="same as --device auto (accelerate)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code from the model dir")


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
        parts = text.split(",")
        if not all(part.strip() for part in parts):  # "0,,1", "2,": a value left out by mistake, not dropped
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {element.__name__}s, got an empty item in {text!r}"
            )
        try:
            return [element(part) for part in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {element.__name__}s, got {text!r}") from None

    return parse


def add_config_flags(parser: argparse.ArgumentParser, config_class: type, *, presets: bool = False) -> None:
    """One flag per dataclass field; defaults are shown from the dataclass and applied there, not here."""
    hints = typing.get_type_hints(config_class)
    note = " (explicit flags override --preset)" if presets else ""
    group = parser.add_argument_group(f"{config_class.__name__}{note}")
    for f in dataclasses.fields(config_class):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if "default" not in help_text:
            shown = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
            help_text += f" (default: {shown})"
        element, is_sequence = _flag_type(hints[f.name])
        if typing.get_origin(element) is typing.Literal:
            group.add_argument(flag, choices=typing.get_args(element), default=argparse.SUPPRESS, help=help_text)
        elif element is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
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


def config_from_args(
    args: argparse.Namespace,
    config_class: type,
    presets: dict[str, dict[str, Any]],
    *,
    resolve: Callable[[str, Any], dict[str, Any]] | None = None,
    merge: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None,
) -> Any:
    """The config: the preset's values (``resolve(name, method)`` where given), then every flag given explicitly
    (combined by ``merge(preset_values, explicit)`` where given)."""
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
    if preset_name is not None and resolve is not None:  # presets with a block per method (RMUConfig's)
        base = resolve(preset_name, explicit.get("method"))
    return config_class(**(merge(base, explicit) if merge is not None else {**base, **explicit}))
