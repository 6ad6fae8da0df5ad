"""The package's exceptions: one base class, each subclass also a fitting builtin.

Messages say what failed, the bad value, what is valid and how to fix it. The CLI turns any
:class:`RepeUnlearnError` into one line on stderr and exit code 2.
"""


class RepeUnlearnError(Exception):
    """Base class of every error this package raises on purpose."""


class ArchitectureError(RepeUnlearnError, LookupError):
    """The model's decoder layers or one of their parts cannot be found."""


class LayerNotFoundError(RepeUnlearnError, IndexError):
    """A layer index is out of range for the model (or absent from a cache or vector), not an int (a float,
    bool or string layer is refused, never truncated), or an empty selection of layers."""


class HookPointError(RepeUnlearnError, ValueError):
    """An unknown hook point name (in ``record``, ``attach``, ``ControlVector``, ``ablate_direction``...), a
    module output that holds no activation tensor, or a handle entered after its removal or inside its own
    ``with`` block."""


class ShapeError(RepeUnlearnError, ValueError):
    """A tensor's shape does not fit the model, e.g. a vector whose size is not d_model, a hook point whose
    module gives no ``[batch pos d_model]`` activation (named in the message), or a zero, NaN or infinite
    direction."""


class FormatError(RepeUnlearnError, ValueError):
    """A file is not what it should be: not safetensors, or not written by this package."""


class ConfigError(RepeUnlearnError, ValueError):
    """An invalid option or combination of options, e.g. an intervention entered while already active, one
    built for another model than the one evaluated, or a non-finite steering coefficient."""


class DataError(RepeUnlearnError, ValueError):
    """A corpus or dataset file that is missing, malformed or empty after filtering."""


class TrainingError(RepeUnlearnError, RuntimeError):
    """Training cannot go on, e.g. a loss became NaN or infinite."""
