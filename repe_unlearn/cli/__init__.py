"""Command line: argparse -> library calls. The only package that prints for humans or exits.

Errors of this package become one line on stderr and exit code 2; ``--debug`` shows the traceback.
"""

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import RepeUnlearnError
from ._common import add_config_flags, add_model_flags
from .attack import add_attack_parser
from .demo import add_demo_parser
from .diagnose import add_diagnose_parser
from .evaluate import cmd_eval
from .inspect import cmd_inspect
from .toy import add_toy_parser
from .unlearn import cmd_apply_delta, cmd_unlearn

EXIT_USAGE = 2


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

    from ..rmu import PRESETS, RMUConfig

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

    evaluate = sub.add_parser("eval", help=cmd_eval.__doc__, description=cmd_eval.__doc__)
    evaluate.add_argument("--model", required=True, help="local HuggingFace model directory (with its tokenizer)")
    evaluate.add_argument(
        "--mcq", action="append", metavar="FILE", help="JSONL/JSON/parquet with question, choices, answer; repeatable"
    )
    evaluate.add_argument(
        "--format",
        choices=["letter", "cloze"],
        default="letter",
        help="letter: lm-eval's zero-shot A/B/C/D prompt; cloze: score each choice's text",
    )
    evaluate.add_argument(
        "--subject",
        help="adds lm-eval's line 'The following are multiple choice questions (with answers) about SUBJECT.'",
    )
    evaluate.add_argument("--perplexity", metavar="FILE", help="token-level perplexity on a text corpus")
    evaluate.add_argument("--batch-size", type=int, default=16, help="questions (or texts) per forward pass")
    evaluate.add_argument("--json", metavar="OUT", help='write {"results": {"<file stem>": {...}}}')
    evaluate.add_argument("--predictions", metavar="OUT.jsonl", help="one line per item: index, pred, answer, scores")
    evaluate.add_argument("--overwrite", action="store_true", help="replace existing --json/--predictions files")
    add_model_flags(evaluate)
    evaluate.set_defaults(func=cmd_eval)

    add_toy_parser(sub)
    add_diagnose_parser(sub)
    add_attack_parser(sub)
    add_demo_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``repe-unlearn`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    import transformers

    from ..distributed import init_from_env

    transformers.utils.logging.disable_progress_bar()  # per-file load/save bars are noise next to ours
    init_from_env()  # under torchrun / accelerate launch: join the process group
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
