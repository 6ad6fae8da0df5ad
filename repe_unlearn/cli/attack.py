"""``repe-unlearn attack relearn|ablate|suffix|quantize|few-shot|unrelated``: does unlearned knowledge come
back? The model on disk is never modified: attacks run on the copy in memory."""

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ._common import (
    add_model_flags,
    distinct_inputs,
    input_paths,
    load_model,
    mcq_sets,
    note_format,
    positive_float,
    positive_int,
    rmu_record,
    subject_fits_format,
    tokenizer_for,
)
from ._steering import add_intervention_flags, load_target_model, recorded, with_interventions


def _scorer(args: argparse.Namespace, model: Any, tokenizer: Any) -> Callable[[Any, str], float]:
    """Accuracy of ``model`` on some items, scored as ``repe-unlearn eval`` scores them."""
    from ..evaluation import evaluate_mcq

    noted: list[bool] = []

    def score(items: Any, name: str) -> float:
        if not noted:  # the first scoring: every refusal is past, so a refusal stays one line
            note_format(args.eval_mcq, args.format)
            noted.append(True)
        return evaluate_mcq(
            model, tokenizer, items, format=args.format, subject=args.subject, batch_size=args.batch_size, name=name
        ).accuracy

    return score


def _evaluator(args: argparse.Namespace, model: Any, tokenizer: Any) -> Callable[[], dict[str, float]]:
    item_sets = mcq_sets(args.eval_mcq)
    score = _scorer(args, model, tokenizer)
    return lambda: {name: score(items, name) for name, items in item_sets.items()}


def _check_outputs(args: argparse.Namespace) -> None:
    from .._outputs import check_output_file

    check_output_file(args.json, "--json", overwrite=args.overwrite, inputs=input_paths(args))
    subject_fits_format(args)
    train = getattr(args, "train_mcq", None)
    for train_path in train if isinstance(train, list) else [train]:
        for eval_path in args.eval_mcq:
            distinct_inputs(("--train-mcq and --eval-mcq", train_path, eval_path))


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _finish(args: argparse.Namespace, result: Any) -> int:
    print(f"{'':<28}{'before':>8}{'after':>8}")
    for name in result.before:
        print(f"{name:<28}{result.before[name]:8.3f}{result.after[name]:8.3f}")
    if args.json:
        from .._outputs import write_text_atomically

        record = {"model": args.model, **result.to_dict(), "interventions": recorded(args)}
        write_text_atomically(args.json, json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


@with_interventions
def cmd_relearn(args: argparse.Namespace) -> int:
    """Fine-tune the model on a corpus and evaluate every k steps: does held-out knowledge come back?"""
    from .._reading import read_texts

    _check_outputs(args)
    if args.steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {args.steps}")
    if args.params and args.lora_rank:
        raise ConfigError("--params and --lora-rank are alternatives (LoRA trains its adapters only); give one")
    texts = read_texts(args.train, text_field=args.text_field)
    # torch: once the flags, outputs and inputs are known to be good
    from ..attacks import relearn

    model = load_target_model(args)
    tokenizer = tokenizer_for(args)
    result = relearn(
        model,
        tokenizer,
        texts,
        steps=args.steps,
        evaluate=_evaluator(args, model, tokenizer),
        lr=args.lr,
        batch_size=args.train_batch_size,
        eval_every=args.eval_every,
        params=args.params,
        lora_rank=args.lora_rank,
        seed=args.seed,
    )
    for point in result.curve:
        loss = f"  loss {point.loss:.3f}" if point.loss is not None else ""
        print(f"step {point.step:>5}: " + ", ".join(f"{k} {v:.3f}" for k, v in point.accuracy.items()) + loss)
    return _finish(args, result)


@with_interventions
def cmd_ablate(args: argparse.Namespace) -> int:
    """Project RMU's direction out of the residual stream at the steered layer and after it, then evaluate."""
    from .._reading import read_texts

    _check_outputs(args)
    vectors_path = Path(args.control_vectors or Path(args.model) / "control_vectors.safetensors")
    if args.control_vectors and not vectors_path.is_file():  # named by the user: say so before anything else
        raise ConfigError(f"--control-vectors {vectors_path} does not exist (or is not a file)")
    layer = args.layer if args.layer is not None else rmu_record(args.model)[0]
    if layer is None:
        raise ConfigError(f"give --layer: {args.model} has no rmu_config.json to read the steered layer from")
    if args.direction == "mean-diff":
        if not args.base:
            raise ConfigError("--direction mean-diff needs --base (the model before unlearning)")
        if not args.forget:
            raise ConfigError("--direction mean-diff needs --forget texts to estimate the direction on")
    if args.direction == "control-vector" and not vectors_path.is_file():
        raise ConfigError(f"no control vector at {vectors_path}; pass --control-vectors or --direction mean-diff")
    # torch: once the flags, outputs and inputs are known to be good
    import torch

    from .._io import read_safetensors
    from ..attacks import ablate, mean_difference

    model = load_target_model(args)
    tokenizer = tokenizer_for(args)
    if args.direction == "mean-diff":
        base = load_model(args.base, dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code)
        texts = read_texts(args.forget)
        direction = mean_difference(model, base, tokenizer, texts, layer, max_length=args.max_length)
    else:
        direction = read_safetensors(vectors_path)[0]["0"].to(torch.float32)
    result = ablate(model, direction, layer, evaluate=_evaluator(args, model, tokenizer))
    result.details["direction"] = args.direction
    return _finish(args, result)


@with_interventions
def cmd_suffix(args: argparse.Namespace) -> int:
    """Search a universal adversarial suffix (GCG) on some forget items; evaluate held-out items with it."""
    from .._reading import read_mcq

    _check_outputs(args)
    train = [item for path in args.train_mcq for item in read_mcq(path)]
    # torch: once the flags, outputs and inputs are known to be good
    from ..attacks import AttackResult, CurvePoint, gcg_suffix, with_suffix
    from ..evaluation import evaluate_mcq

    model = load_target_model(args)
    tokenizer = tokenizer_for(args)
    evaluate = _evaluator(args, model, tokenizer)
    before = evaluate()
    found = gcg_suffix(
        model,
        tokenizer,
        train,
        format=args.format,
        length=args.length,
        steps=args.steps,
        top_k=args.top_k,
        candidates=args.candidates,
        seed=args.seed,
    )
    after = {
        Path(p).stem: evaluate_mcq(
            model,
            tokenizer,
            with_suffix(read_mcq(p), found.text),
            format=args.format,
            subject=args.subject,
            batch_size=args.batch_size,
        ).accuracy
        for p in args.eval_mcq
    }
    print(f"suffix: {found.text!r}")
    settings = {k: getattr(args, k) for k in ("length", "steps", "top_k", "candidates", "seed")}
    details = {"suffix": found.text, "suffix_ids": found.ids, "objective": found.objective, **settings}
    curve = [CurvePoint(0, before), CurvePoint(args.steps, after)]  # without the suffix, then with it
    result = AttackResult("suffix", before, after, curve, details)
    return _finish(args, result)


@with_interventions
def cmd_quantize(args: argparse.Namespace) -> int:
    """Round the model's decoder weights to int8/int4 (round-to-nearest, per channel or group-wise), evaluate."""
    _check_outputs(args)
    settings = []
    for spec in args.setting or ["8:per-channel", "4:per-channel", "4:group"]:
        bits, _, scheme = spec.partition(":")
        if bits not in ("8", "4", "3", "2") or scheme not in ("per-channel", "group"):
            raise ConfigError(
                f"--setting {spec!r}: give BITS:SCHEME, BITS one of 8, 4, 3, 2, SCHEME per-channel or group"
            )
        if (int(bits), scheme) in settings:
            raise ConfigError(f"--setting {spec!r} is given twice; each setting runs once")
        settings.append((int(bits), scheme))
    if args.group is not None and not any(scheme == "group" for _, scheme in settings):
        raise ConfigError("--group applies to a BITS:group --setting only; none is given, so it would be ignored")
    # torch: once the flags, outputs and inputs are known to be good
    from ..attacks import quantize

    model = load_target_model(args)
    tokenizer = tokenizer_for(args)
    evaluate = _evaluator(args, model, tokenizer)
    results = quantize(model, evaluate=evaluate, settings=tuple(settings), group=args.group or 128)  # type: ignore[arg-type]
    return _finish_several(args, results)


@with_interventions
def cmd_few_shot(args: argparse.Namespace) -> int:
    """Put k solved questions about other entities before each question, for each k; evaluate."""
    from .._reading import read_mcq

    _check_outputs(args)
    for eval_path in args.eval_mcq:
        distinct_inputs(("--shots-mcq and --eval-mcq", args.shots_mcq, eval_path))
    shots = read_mcq(args.shots_mcq)
    item_sets = mcq_sets(args.eval_mcq)
    parts = [k.strip() for k in args.k.split(",")] if args.k is not None else ["1", "3", "5"]
    if not parts or any(not k.isdigit() or int(k) < 1 for k in parts):
        raise ConfigError(f"--k takes positive integers separated by commas, got {args.k!r}")
    ks = [int(k) for k in parts]
    if len(set(ks)) < len(ks):
        raise ConfigError(f"--k names {sorted(k for k in set(ks) if ks.count(k) > 1)[0]} twice; each k runs once")
    # torch: once the flags, outputs and inputs are known to be good
    from ..attacks import few_shot

    model = load_target_model(args)
    tokenizer = tokenizer_for(args)
    score = _scorer(args, model, tokenizer)
    results = []
    for name, items in item_sets.items():

        def evaluate(chosen: list[Any], name: str = name) -> dict[str, float]:
            return {name: score(chosen, name)}

        results += few_shot(items, shots, evaluate=evaluate, format=args.format, ks=ks, seed=args.seed)
    return _finish_several(args, results)


def _finish_several(args: argparse.Namespace, results: list[Any]) -> int:
    """One line per attack setting and evaluation set; ``--json`` holds them all."""
    for result in results:
        for name in result.before:
            print(f"{result.attack:<28}{name:<28}{result.before[name]:8.3f}{result.after[name]:8.3f}")
    if args.json:
        from .._outputs import write_text_atomically

        record = {"model": args.model, "attacks": [r.to_dict() for r in results], "interventions": recorded(args)}
        write_text_atomically(args.json, json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


@with_interventions
def cmd_unrelated(args: argparse.Namespace) -> int:
    """Fine-tune on text that never names an evaluated entity (e.g. the retain corpus); evaluate."""
    from .._reading import read_texts

    _check_outputs(args)
    texts = read_texts(args.train, text_field=args.text_field)
    checked = args.held_out_mcq or args.eval_mcq  # the forgotten facts' questions (a retain set names other entities)
    entities = [item.entity for items in mcq_sets(checked).values() for item in items if item.entity]
    if not entities:
        raise ConfigError("the held-out items carry no 'entity' field, so --train cannot be checked against them")
    # torch: once the flags, outputs and inputs are known to be good
    from ..attacks import unrelated

    model = load_target_model(args)
    tokenizer = tokenizer_for(args)
    result = unrelated(
        model,
        tokenizer,
        texts,
        entities=entities,
        evaluate=_evaluator(args, model, tokenizer),
        steps=args.steps,
        lr=args.lr,
        batch_size=args.train_batch_size,
        eval_every=args.steps,
        seed=args.seed,
        progress=True,
    )
    return _finish(args, result)


def _eval_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="the unlearned model directory (never modified)")
    parser.add_argument(
        "--eval-mcq",
        required=True,
        action="append",
        metavar="FILE",
        help="MCQ file to evaluate before and after; repeatable",
    )
    parser.add_argument(
        "--format", choices=["letter", "cloze"], default="letter", help="as in repe-unlearn eval (default: letter)"
    )
    parser.add_argument("--subject", help="as in repe-unlearn eval")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="questions per forward pass")
    parser.add_argument("--json", metavar="OUT", help="write before/after accuracy and the attack's details")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json")
    parser.add_argument("--seed", type=int, default=0, help="seed of the attack's sampling")
    add_model_flags(parser)
    add_intervention_flags(parser)


def add_attack_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register ``attack relearn``, ``attack ablate``, ``attack suffix`` and ``attack quantize``."""
    attack = sub.add_parser(
        "attack",
        help="relearning, direction-ablation, adversarial-suffix and quantization attacks",
        description=__doc__,
    )
    kinds = attack.add_subparsers(dest="attack", metavar="ATTACK", required=True)

    p = kinds.add_parser("relearn", help=cmd_relearn.__doc__, description=cmd_relearn.__doc__)
    _eval_flags(p)
    p.add_argument("--train", required=True, help="corpus to fine-tune on (e.g. half of the forget entities)")
    p.add_argument("--steps", type=positive_int, default=50, help="fine-tuning steps (default: 50)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="AdamW learning rate (default: 1e-3)")
    p.add_argument("--train-batch-size", type=positive_int, default=8, help="texts per step (default: 8)")
    p.add_argument("--eval-every", type=positive_int, default=10, help="evaluate every k steps (default: 10)")
    p.add_argument("--params", action="append", metavar="GLOB", help="train only matching tensors; repeatable")
    p.add_argument("--lora-rank", type=positive_int, help="train LoRA adapters of this rank (needs peft)")
    p.add_argument("--text-field", default="text", help="JSONL/parquet field holding the text")
    p.set_defaults(func=cmd_relearn)

    p = kinds.add_parser("ablate", help=cmd_ablate.__doc__, description=cmd_ablate.__doc__)
    _eval_flags(p)
    p.add_argument(
        "--direction",
        choices=["control-vector", "mean-diff"],
        default="control-vector",
        help="the control vector saved with the model, or mean(unlearned) - mean(base) on --forget",
    )
    p.add_argument("--base", help="the model before unlearning (for --direction mean-diff)")
    p.add_argument(
        "--max-length",
        type=positive_int,
        default=512,
        help="tokens per --forget text for the mean difference; longer ones are cut (default: 512)",
    )
    p.add_argument("--forget", help="forget texts to estimate the mean difference on")
    p.add_argument("--control-vectors", metavar="FILE", help="default: MODEL/control_vectors.safetensors")
    p.add_argument("--layer", type=int, help="first layer to ablate at (default: the steered layer of the model)")
    p.set_defaults(func=cmd_ablate)

    p = kinds.add_parser("suffix", help=cmd_suffix.__doc__, description=cmd_suffix.__doc__)
    _eval_flags(p)
    p.add_argument(
        "--train-mcq",
        required=True,
        action="append",
        metavar="FILE",
        help="items whose right answers the suffix is optimised for; repeatable",
    )
    p.add_argument("--length", type=positive_int, default=8, help="suffix tokens (default: 8)")
    p.add_argument("--steps", type=positive_int, default=40, help="GCG steps (default: 40)")
    p.add_argument("--top-k", type=positive_int, default=32, help="substitutions considered per position (default: 32)")
    p.add_argument("--candidates", type=positive_int, default=32, help="candidates scored per step (default: 32)")
    p.set_defaults(func=cmd_suffix)

    p = kinds.add_parser("quantize", help=cmd_quantize.__doc__, description=cmd_quantize.__doc__)
    _eval_flags(p)
    p.add_argument(
        "--setting",
        action="append",
        metavar="BITS:SCHEME",
        help="e.g. 4:group or 8:per-channel; repeatable (default: 8:per-channel, 4:per-channel, 4:group)",
    )
    p.add_argument(
        "--group",
        type=positive_int,
        default=None,
        help="input columns per scale in group-wise settings (or the largest divisor of the width below; default: 128)",
    )
    p.set_defaults(func=cmd_quantize)

    p = kinds.add_parser("few-shot", help=cmd_few_shot.__doc__, description=cmd_few_shot.__doc__)
    _eval_flags(p)
    p.add_argument(
        "--shots-mcq",
        required=True,
        metavar="FILE",
        help="solved examples to draw from, about entities never evaluated (items need an 'entity' field)",
    )
    p.add_argument("--k", help="examples per question, comma-separated (default: 1,3,5)")
    p.set_defaults(func=cmd_few_shot)

    p = kinds.add_parser("unrelated", help=cmd_unrelated.__doc__, description=cmd_unrelated.__doc__)
    _eval_flags(p)
    p.add_argument("--train", required=True, help="texts that never name a held-out entity (refused if they do)")
    p.add_argument(
        "--held-out-mcq",
        action="append",
        metavar="FILE",
        help="the forgotten facts' questions, whose entities --train must never name (default: every --eval-mcq); "
        "repeatable",
    )
    p.add_argument("--steps", type=positive_int, default=10, help="fine-tuning steps (default: 10)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="AdamW learning rate (default: 1e-3)")
    p.add_argument("--train-batch-size", type=positive_int, default=8, help="texts per step (default: 8)")
    p.add_argument("--text-field", default="text", help="JSONL/parquet field holding the text")
    p.set_defaults(func=cmd_unrelated)
