"""``python -m repe_unlearn`` runs the CLI."""

from .cli import entry

entry()
