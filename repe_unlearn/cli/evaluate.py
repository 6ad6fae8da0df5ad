"""``repe-unlearn eval``."""

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ._common import (
    add_model_flags,
    input_paths,
    mcq_sets,
    note_format,
    positive_int,
    subject_fits_format,
    tokenizer_for,
)
from ._steering import add_intervention_flags, load_target_model, recorded, with_interventions


@with_interventions
def cmd_eval(args: argparse.Namespace) -> int:
    """Multiple-choice accuracy (WMDP/MMLU format, as lm-eval scores it) and perplexity of a model."""
    from .._outputs import check_output_file, write_text_atomically
    from .._reading import read_texts

    if not args.mcq and not args.perplexity:
        raise ConfigError("nothing to evaluate: give --mcq FILE (repeatable) and/or --perplexity FILE")
    subject_fits_format(args)
    if args.base is not None and not Path(args.base).is_dir():
        raise ConfigError(f"--base {args.base} is not a model directory (it is compared with --model's tokenizer)")
    inputs = input_paths(args)
    for flag, target in (("--json", args.json), ("--predictions", args.predictions)):
        check_output_file(target, flag, overwrite=args.overwrite, inputs=inputs)
    if args.json and args.predictions and Path(args.json).resolve() == Path(args.predictions).resolve():
        raise ConfigError("--json and --predictions name the same file; give two paths")
    item_sets = mcq_sets(args.mcq)
    texts = read_texts(args.perplexity) if args.perplexity else None
    from .._distributed import is_main  # torch: once the inputs are known to be good
    from ..evaluation import evaluate_mcq, perplexity

    model = load_target_model(args)
    tokenizer = tokenizer_for(args)
    note_format(args.mcq, args.format)  # once every refusal is past: a refusal stays one line
    results: dict[str, Any] = {}
    lines = []
    main_rank = is_main()
    for name, items in item_sets.items():
        result = evaluate_mcq(
            model,
            tokenizer,
            items,
            format=args.format,
            subject=args.subject,
            batch_size=args.batch_size,
            name=name,
            progress=main_rank,
        )
        results[name] = result.to_dict()
        norm = f"  acc_norm {result.acc_norm:.4f}" if result.acc_norm is not None else ""
        if main_rank:
            print(f"{name:<32} n={result.n:<6} accuracy {result.accuracy:.4f}{norm}")
        lines += [{"file": name, **vars(p)} for p in result.predictions]
    if texts is not None:
        ppl = perplexity(model, tokenizer, texts, batch_size=args.batch_size)
        results[f"perplexity:{Path(args.perplexity).stem}"] = {"perplexity": ppl, "n": len(texts)}
        if main_rank:
            print(f"{'perplexity ' + Path(args.perplexity).stem:<32} n={len(texts):<6} {ppl:.3f}")
    if not main_rank:  # under torchrun rank 0 alone writes
        return 0
    if args.json:
        record = {"model": args.model, "results": results, "interventions": recorded(args)}
        write_text_atomically(args.json, json.dumps(record, indent=2) + "\n")
    if args.predictions:
        write_text_atomically(args.predictions, "".join(json.dumps(line) + "\n" for line in lines))
    return 0


def add_eval_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register ``eval``."""
    evaluate = sub.add_parser("eval", help=cmd_eval.__doc__, description=cmd_eval.__doc__)
    evaluate.add_argument("--model", required=True, help="local HuggingFace model directory (with its tokenizer)")
    evaluate.add_argument(
        "--mcq", action="append", metavar="FILE", help="JSONL/JSON/parquet with question, choices, answer; repeatable"
    )
    evaluate.add_argument(
        "--format",
        choices=["letter", "cloze"],
        default="letter",
        help="letter (the default): lm-eval's zero-shot A/B/C/D prompt; cloze: score each choice's text",
    )
    evaluate.add_argument(
        "--subject",
        help="adds lm-eval's line 'The following are multiple choice questions (with answers) about SUBJECT.'",
    )
    evaluate.add_argument("--perplexity", metavar="FILE", help="token-level perplexity on a text corpus")
    evaluate.add_argument(
        "--base",
        help="the model before unlearning: warn when --model's tokenizer differs from it (default: the base "
        "named in --model's rmu_config.json)",
    )
    evaluate.add_argument("--batch-size", type=positive_int, default=16, help="questions (or texts) per forward pass")
    evaluate.add_argument("--json", metavar="OUT", help='write {"results": {"<file stem>": {...}}}')
    evaluate.add_argument("--predictions", metavar="OUT.jsonl", help="one line per item: index, pred, answer, scores")
    evaluate.add_argument("--overwrite", action="store_true", help="replace existing --json/--predictions files")
    add_model_flags(evaluate)
    add_intervention_flags(evaluate)
    evaluate.set_defaults(func=cmd_eval)
