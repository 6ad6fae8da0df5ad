"""The package's exceptions: one base class, each subclass also a fitting builtin.

Messages say what failed, the bad value, what is valid and how to fix it. The CLI turns any
:class:`RepeUnlearnError` into one line on stderr and exit code 2.
"""


class RepeUnlearnError(Exception):
    """Base class of every error this package raises on purpose."""


class ArchitectureError(RepeUnlearnError, LookupError):
    """The model's decoder layers or one of their parts cannot be found."""


class LayerNotFoundError(RepeUnlearnError, IndexError):
    """A layer index is out of range for the model (or absent from a cache or vector)."""


class HookPointError(RepeUnlearnError, ValueError):
    """An unknown hook point name, or a module output that holds no activation tensor."""


class ShapeError(RepeUnlearnError, ValueError):
    """A tensor's shape does not fit the model, e.g. a vector whose size is not d_model."""


class FormatError(RepeUnlearnError, ValueError):
    """A file is not what it should be: not safetensors, or not written by this package."""


class ConfigError(RepeUnlearnError, ValueError):
    """An invalid option or combination of options."""


class DataError(RepeUnlearnError, ValueError):
    """A corpus or dataset file that is missing, malformed or empty after filtering."""


class TrainingError(RepeUnlearnError, RuntimeError):
    """Training cannot go on, e.g. a loss became NaN or infinite."""
