"""Command line: argparse -> library calls. The only package that prints for humans or exits.

Errors of this package become one line on stderr and exit code 2; ``--debug`` shows the traceback.
"""

import argparse
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .. import __version__
from ..errors import ConfigError, RepeUnlearnError
from .attack import add_attack_parser
from .demo import add_demo_parser
from .diagnose import add_diagnose_parser
from .evaluate import add_eval_parser
from .inspect import add_inspect_parser
from .robustness import add_robustness_parser
from .toy import add_toy_parser
from .unlearn import add_unlearn_parser
from .vector import add_vector_parser

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is one ``--help`` away), and values that start with a minus and a
    digit read as values: ``--update-layers -4,-3,-2`` (layers counted from the last), as Python 3.13's argparse
    reads them; before it, only a lone negative number was."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"-\.?\d")

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``repe-unlearn`` argument parser (docs generate the CLI reference from it)."""
    parser = _Parser(
        prog="repe-unlearn",
        description="Activation editing with hooks for HuggingFace causal LMs, and RMU unlearning built on it.",
    )
    parser.add_argument("--version", action="version", version=f"repe-unlearn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    sub: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(  # type: ignore[assignment]
        dest="command", metavar="COMMAND"
    )
    for add_parser in (
        add_inspect_parser,
        add_unlearn_parser,
        add_eval_parser,
        add_toy_parser,
        add_diagnose_parser,
        add_attack_parser,
        add_robustness_parser,
        add_vector_parser,
        add_demo_parser,
    ):
        add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``repe-unlearn`` console script.

    Every failure is one line on stderr: the package's own errors and the operating system's (a missing,
    unreadable or existing file) exit with 2, an interrupt with 130 (outputs are written atomically, so an
    interrupted run leaves nothing half-written), anything unexpected with 1; ``--debug`` re-raises instead.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a one-line usage error
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help()
        return 0
    try:
        # torch and transformers load only when a command needs them, so that it refuses bad input at once
        _quiet_transformers()
        if _launched_world_size() > 1:  # under torchrun / accelerate launch: join the process group
            from .._distributed import init_from_env

            init_from_env()
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("repe-unlearn: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (RepeUnlearnError, OSError) as exc:
        if args.debug:
            raise
        print(f"repe-unlearn: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a bug or an unforeseen failure: still one line, the traceback behind --debug
        if args.debug:
            raise
        print(
            f"repe-unlearn: unexpected error: {type(exc).__name__}: {_one_line(exc)} (rerun with --debug for the "
            "traceback)",
            file=sys.stderr,
        )
        return 1


def _launched_world_size() -> int:
    """The ``WORLD_SIZE`` a launcher set (1 without one), checked before torch loads: a value that is not a
    positive integer, or a world of several processes without the rest of the launcher's variables, is refused."""
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        size = int(text)
    except ValueError:
        size = 0
    if size < 1:
        raise ConfigError(f"WORLD_SIZE must be a positive integer (torchrun sets it), got {text!r}")
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if size > 1 and name not in os.environ]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE is {size} but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: launch "
            "several processes with torchrun --nproc-per-node N repe-unlearn ..., or unset WORLD_SIZE"
        )
    return size


def _quiet_transformers() -> None:
    """No per-file load/save progress bars from transformers (noise next to ours), whether it is loaded yet or
    not: its bars follow huggingface_hub's switch, read when it is first imported."""
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    else:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _one_line(exc: BaseException) -> str:
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text or type(exc).__name__


def entry() -> None:
    """Console-script wrapper: exit with :func:`main`'s code."""
    sys.exit(main())
