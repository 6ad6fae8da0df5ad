"""``repe-unlearn toy world`` and ``toy pretrain``: make a fictitious world and a model that knows it."""

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any, Literal

from ._common import (
    add_config_flags,
    config_from_args,
    input_paths,
    mcq_sets,
    non_negative_int,
    note_format,
    positive_int,
    unique_inputs,
)


def cmd_toy_world(args: argparse.Namespace) -> int:
    """Write a fictitious world: forget/retain corpora, cloze and letter MCQ files, a forget split."""
    from .._outputs import OutputDir
    from ..toy import World, write_world

    out = OutputDir(args.out, overwrite=args.overwrite, kind="toy world")
    world = World.generate(
        args.seed,
        args.entities,
        forget_domain=args.forget_domain,
        retain_domain=args.retain_domain,
        form=args.form,
        order=args.order,
        syllables=args.name_syllables,
    )
    names: list[str] = []

    def fill(tmp: Path) -> None:
        names.extend(p.name for p in write_world(world, tmp, letter_variants=args.letter_variants).values())

    out.write(fill)  # all or nothing
    print(f"wrote {len(names)} files to {args.out}: " + ", ".join(sorted(names)))
    return 0


def cmd_toy_pretrain(args: argparse.Namespace) -> int:
    """Train a tokenizer and a small Llama causal LM from scratch on corpora; save both (HuggingFace format)."""
    from .._outputs import OutputDir
    from .._reading import read_texts
    from ..toy import PretrainConfig

    config = config_from_args(args, PretrainConfig, {})
    for flag, paths in (("--corpus", args.corpus), ("--eval-mcq", args.eval_mcq), ("--eval-letter", args.eval_letter)):
        unique_inputs(flag, paths)
    out = OutputDir(args.out, overwrite=args.overwrite, inputs=input_paths(args), kind="toy pretrain")
    texts = [t for path in args.corpus for t in read_texts(path, text_field=args.text_field)]
    item_sets = mcq_sets(args.eval_mcq)
    letter_sets = mcq_sets(args.eval_letter)
    note_format(args.eval_mcq, "cloze", "--eval-letter scores letter questions")
    note_format(args.eval_letter, "letter", "--eval-mcq scores cloze questions")
    from ..evaluation import evaluate_mcq  # torch: once the flags, output and inputs are known to be good
    from ..toy import pretrain

    model, tokenizer, losses = pretrain(texts, config, eval_items=item_sets)
    run = model.config.repe_unlearn_pretrain
    results = {}
    formats: tuple[tuple[Literal["cloze", "letter"], dict[str, Any]], ...] = (
        ("cloze", item_sets),
        ("letter", letter_sets),
    )
    for format, sets in formats:
        for name, items in sets.items():
            result = evaluate_mcq(model, tokenizer, items, format=format, batch_size=64, name=name)
            results[name] = result.to_dict()
            print(f"{name:<24} {format} accuracy {result.accuracy:.3f} (n={result.n})")
    seconds, steps = run["seconds"], run["steps_run"]
    reached = min((r["accuracy"] for name, r in results.items() if name in item_sets), default=None)
    warnings = list(run["warnings"])
    if run["stopped"] == "ceiling":
        if reached is not None:
            warnings.append(
                f"stopped at the ceiling ({steps} steps, {seconds:.0f} s), accuracy {reached:.3f} below --target "
                f"{config.target}; the facts may not be learned: raise --max-steps / --max-seconds, or check that "
                "the questions are about this corpus"
            )
        else:
            warnings.append(
                f"stopped at the ceiling ({steps} steps, {seconds:.0f} s) with the loss ({losses[-1]:.3f}) still "
                "falling; the corpus may not be learned: raise --max-steps / --max-seconds, or give --eval-mcq "
                "questions to stop once they are answered"
            )
    elif run["stopped"] == "steps" and reached is not None and reached < config.target:
        warnings.append(
            f"--steps {steps} ended at accuracy {reached:.3f}, below --target {config.target}: the facts are not "
            "all learned (leave out --steps to train until they are)"
        )
    elif run["stopped"] == "plateau" and reached is not None and reached < config.target:
        warnings.append(f"accuracy stopped rising at {reached:.3f}, below --target {config.target}")
    elif run["stopped"] == "target" and reached is not None and reached < config.target:
        warnings.append(
            f"the target {config.target} was reached on the questions checked during training (up to 200 of each "
            f"--eval-mcq file; lowest {min(run['checked_accuracy'].values()):.3f}), not on the whole files (lowest "
            f"{reached:.3f})"
        )
    for warning in warnings[len(run["warnings"]) :]:
        print(f"warning: {warning}", file=sys.stderr)

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        summary = {
            "config": config.to_dict(),
            "vocabulary": len(tokenizer),  # the tokens the tokenizer learned: at most config's vocab_size
            "seconds": seconds,
            "steps": steps,
            "documents": run["documents"],
            "stopped": run["stopped"],
            "checked_accuracy": run["checked_accuracy"],  # what the stop was decided on
            "checked_questions": run["checked_questions"],
            "final_loss": losses[-1],
            "corpora": list(args.corpus),
            "eval": results,
            "warnings": warnings,
        }
        (tmp / "pretrain.json").write_text(json.dumps(summary, indent=2) + "\n")

    out.write(fill)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"trained {n_params / 1e6:.2f}M parameters ({run['n_layers']} layer{'s' * (run['n_layers'] != 1)}, "
        f"d_model {run['d_model']}, {run['optimizer']}) on "
        f"{run['documents']} document{'s' * (run['documents'] != 1)}: {steps} steps in {seconds:.0f} s, "
        f"stopped: {run['stopped']} (final loss {losses[-1]:.3f}); wrote {args.out}"
    )
    return 0


def cmd_toy_letters(args: argparse.Namespace) -> int:
    """Teach a toy model to answer its facts as letter-format (WMDP-style) questions: new layers stacked on the
    frozen model, trained on half the entities' letter questions; reports the other half's."""
    from .._outputs import OutputDir
    from ..errors import ConfigError
    from ..toy import LetterConfig
    from ..toy.letters import world_letters

    config = config_from_args(args, LetterConfig, {})
    out = OutputDir(args.out, overwrite=args.overwrite, inputs=input_paths(args), kind="toy letters")
    sets = world_letters(args.world)
    from ..evaluation import evaluate_mcq  # torch: once the flags, output and world are known to be good
    from ..toy.letters import check_model, reshuffled, train_letters
    from ._common import load_model, load_tokenizer

    base = load_model(args.model).eval()
    check_model(base, config)
    tokenizer = load_tokenizer(args.model)
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"the tokenizer of {args.model} is not a fast tokenizer: the letters need its offsets")
    warnings: list[str] = []

    def score(model: Any, items: list[Any], format: Literal["cloze", "letter"]) -> float | None:
        return evaluate_mcq(model, tokenizer, items, format=format, batch_size=64).accuracy if items else None

    orders = random.Random(7)
    trained_orders = [reshuffled(item, orders) for item in sets.trained]  # scored before and after
    before = {
        "forget cloze": score(base, sets.forget_cloze, "cloze"),
        "retain cloze": score(base, sets.retain_cloze, "cloze"),
        "trained": score(base, trained_orders, "letter"),
        "forget unseen": score(base, sets.forget_unseen, "letter"),
        "retain unseen": score(base, sets.retain_unseen, "letter"),
    }
    print("before: " + "  ".join(f"{k} {v:.3f}" for k, v in before.items() if v is not None))
    known = min(v for k, v in before.items() if "cloze" in k and v is not None)
    if known < 0.9:
        warnings.append(
            f"{args.model} answers this world's cloze questions at {known:.3f}: it does not know these facts (was it "
            "trained on another world's prose, or not until the facts were known?); the new layers read what it "
            "recalls, so what it does not know cannot be answered in letters either"
        )
        print(f"warning: {warnings[-1]}", file=sys.stderr)
    for flag, asked, available, what in (
        ("--batch-size", config.batch_size, len(sets.trained), "questions to train on"),
        ("--prose", config.prose, len(sets.prose), "prose documents"),
    ):
        if asked > available:
            warnings.append(f"{flag} {asked}: the world has {available} {what}; each step takes all {available}")
            print(f"warning: {warnings[-1]}", file=sys.stderr)
    probe = random.Random(5)  # the checks on the bar: up to 100 questions of each set, drawn once
    checks = {  # named apart from the final scores: these are samples, the trained ones in other choice orders
        "trained (sample)": [
            reshuffled(item, probe) for item in probe.sample(sets.trained, min(100, len(sets.trained)))
        ],
        "forget unseen (sample)": probe.sample(sets.forget_unseen, min(100, len(sets.forget_unseen))),
        "retain unseen (sample)": probe.sample(sets.retain_unseen, min(100, len(sets.retain_unseen))),
    }
    checks = {name: items for name, items in checks.items() if items}
    model, run = train_letters(base, tokenizer, sets.prose, sets.trained, config, checks=checks)
    after = {
        "forget cloze": score(model, sets.forget_cloze, "cloze"),
        "retain cloze": score(model, sets.retain_cloze, "cloze"),
        "trained": score(model, trained_orders, "letter"),
        "forget unseen": score(model, sets.forget_unseen, "letter"),
        "retain unseen": score(model, sets.retain_unseen, "letter"),
    }
    counts = {
        "trained": len(sets.trained),
        "forget unseen": len(sets.forget_unseen),
        "retain unseen": len(sets.retain_unseen),
    }
    for name in ("forget cloze", "retain cloze"):
        was, now = before[name], after[name]
        if was is not None and now is not None and now < was - 0.02:
            warnings.append(f"{name} accuracy fell from {was:.3f} to {now:.3f} while the letters were trained")
            print(f"warning: {warnings[-1]}", file=sys.stderr)
    for name in ("forget unseen", "retain unseen"):
        value = after[name]
        if value is not None and value < 0.9:
            warnings.append(
                f"{name} letter accuracy {value:.3f} is below 0.9: the letters did not carry over to every entity "
                "(see docs/toy-world.md, 'Letter questions')"
            )
            print(f"warning: {warnings[-1]}", file=sys.stderr)
    for name, value in after.items():
        if value is not None:
            shown = f" (n={counts[name]})" if name in counts else ""
            print(f"{name:<14} {'cloze' if 'cloze' in name else 'letter'} accuracy {value:.3f}{shown}")

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        summary = {
            "config": config.to_dict(),
            "base_model": str(Path(args.model).resolve()),
            "world": str(Path(args.world).resolve()),
            "frozen_layers": run.frozen_layers,
            "trained_parameters": run.trained_parameters,
            "steps": run.steps,
            "seconds": round(run.seconds, 1),
            "final_losses": run.losses,
            "before": before,
            "after": after,
            "questions": counts,
            "checks": run.checks,
            "warnings": warnings,
        }
        (tmp / "letters.json").write_text(json.dumps(summary, indent=2) + "\n")

    out.write(fill)
    print(
        f"stacked {config.layers} trained layers on the {run.frozen_layers} frozen ones "
        f"({run.trained_parameters / 1e6:.2f}M trained parameters): {run.steps} steps in {run.seconds:.0f} s; "
        f"wrote {args.out}"
    )
    return 0


def _syllables(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        pair = (int(low), int(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX, such as 2-3, got {text!r}") from None
    if not 1 <= pair[0] <= pair[1] <= 6:
        raise argparse.ArgumentTypeError(f"expected 1 <= MIN <= MAX <= 6, got {text!r}")
    return pair


def add_toy_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register ``toy world``, ``toy pretrain`` and ``toy letters``."""
    from ..toy import LetterConfig, PretrainConfig
    from ..toy.world import FORGET_DOMAINS, FORMS, MAX_ENTITIES, ORDERS, RETAIN_DOMAINS

    toy = sub.add_parser(
        "toy",
        help="the embedded fictitious world and its tiny model",
        description="Make a fictitious world and a small model that learned it.",
    )
    toy_sub = toy.add_subparsers(dest="toy_command", metavar="COMMAND", required=True)
    world = toy_sub.add_parser("world", help=cmd_toy_world.__doc__, description=cmd_toy_world.__doc__)
    world.add_argument("--out", required=True, help="output directory (refused if it exists and is not empty)")
    world.add_argument("--overwrite", action="store_true", help="replace an existing --out written by this tool")
    world.add_argument(
        "--seed", type=non_negative_int, default=0, help="the same seed gives the same world (0 or more; default: 0)"
    )
    world.add_argument(
        "--entities", type=positive_int, default=50, help=f"entities per domain, 4 to {MAX_ENTITIES} (default: 50)"
    )
    world.add_argument(
        "--forget-domain",
        choices=sorted(FORGET_DOMAINS),
        default="pathogens",
        help="theme to forget (default: pathogens)",
    )
    world.add_argument(
        "--retain-domain", choices=sorted(RETAIN_DOMAINS), default="towns", help="theme to keep (default: towns)"
    )
    world.add_argument(
        "--form",
        choices=FORMS,
        default="plain",
        help="plain: one sentence form per relation; varied: several (entity first, 'The <kind> X', relative "
        "clause, fronted phrase) and value-first restatements (default: plain)",
    )
    world.add_argument(
        "--order", choices=ORDERS, default="fixed", help="sentence order in a paragraph (default: fixed)"
    )
    world.add_argument(
        "--name-syllables",
        type=_syllables,
        default=(2, 3),
        metavar="MIN-MAX",
        help="name length in syllables, 1 to 6; N alone means N-N (default: 2-3)",
    )
    world.add_argument(
        "--letter-variants",
        type=positive_int,
        default=2,
        metavar="N",
        help="answered letter-format copies of each question in letter_train.jsonl, 1 to 24 (default: 2)",
    )
    world.set_defaults(func=cmd_toy_world)

    pre = toy_sub.add_parser("pretrain", help=cmd_toy_pretrain.__doc__, description=cmd_toy_pretrain.__doc__)
    pre.add_argument(
        "--corpus",
        required=True,
        action="append",
        metavar="FILE",
        help="JSONL with 'text', plain text, parquet or datasets dir; repeatable",
    )
    pre.add_argument("--out", required=True, help="output model directory")
    pre.add_argument(
        "--eval-mcq",
        action="append",
        metavar="FILE",
        help="cloze MCQ file: training stops once every one reaches --target; reported at the end; repeatable",
    )
    pre.add_argument("--eval-letter", action="append", metavar="FILE", help="letter-format MCQ file to report")
    pre.add_argument("--text-field", default="text", help="JSONL/parquet field holding the text")
    pre.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_config_flags(pre, PretrainConfig)
    pre.set_defaults(func=cmd_toy_pretrain)

    letters = toy_sub.add_parser("letters", help=cmd_toy_letters.__doc__, description=cmd_toy_letters.__doc__)
    letters.add_argument("--model", required=True, help="a model that knows the world's facts (`toy pretrain`'s)")
    letters.add_argument("--world", required=True, help="the directory `toy world` wrote, whose prose it learned")
    letters.add_argument("--out", required=True, help="output model directory")
    letters.add_argument("--overwrite", action="store_true", help="replace an existing --out written by this tool")
    add_config_flags(letters, LetterConfig)
    letters.set_defaults(func=cmd_toy_letters)


__all__ = ["add_toy_parser"]
