"""``python -m repe_unlearn.cli``: the same as the ``repe-unlearn`` console script."""

from . import entry

entry()
