"""mkdocs hook: the CLI reference page is generated from the parser at build time, so it cannot drift."""

import argparse
from typing import Any

MARKER = "<!-- cli-reference -->"


def _walk(parser: argparse.ArgumentParser, prog: str) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(prog, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _walk(sub, f"{prog} {name}")
    return found


def cli_reference() -> str:
    """One section per command with its ``--help`` text."""
    from repe_unlearn.cli import build_parser

    sections = []
    for prog, parser in _walk(build_parser(), "repe-unlearn"):
        parser.prog = prog
        sections.append(f"## `{prog}`\n\n```text\n{parser.format_help().rstrip()}\n```\n")
    return "\n".join(sections)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return markdown.replace(MARKER, cli_reference()) if MARKER in markdown else markdown
