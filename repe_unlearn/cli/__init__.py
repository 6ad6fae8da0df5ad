"""Command line: argparse -> library calls. The only package that prints for humans or exits.

Errors of this package become one line on stderr and exit code 2; ``--debug`` shows the traceback.
"""

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import RepeUnlearnError
from .attack import add_attack_parser
from .demo import add_demo_parser
from .diagnose import add_diagnose_parser
from .evaluate import add_eval_parser
from .inspect import add_inspect_parser
from .toy import add_toy_parser
from .unlearn import add_unlearn_parser

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
    for add_parser in (
        add_inspect_parser,
        add_unlearn_parser,
        add_eval_parser,
        add_toy_parser,
        add_diagnose_parser,
        add_attack_parser,
        add_demo_parser,
    ):
        add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``repe-unlearn`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    import transformers

    from .._distributed import init_from_env

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
