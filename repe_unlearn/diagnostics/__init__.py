"""Diagnostics: representation norms and linear probes per layer, from one activation cache per model."""

from .._masking import token_norms
from .probes import ProbeResult, fit_choice_probe, fit_probe, split
from .report import norms_figure, probes_figure, reading, write_report
from .run import Diagnostics, cache_features, cache_norms, diagnose, mcq_features, probe_per_layer
from .stats import cosine_to_direction, max_abs_difference, paired_cosine

__all__ = [
    "Diagnostics",
    "ProbeResult",
    "cache_features",
    "cache_norms",
    "cosine_to_direction",
    "diagnose",
    "fit_choice_probe",
    "fit_probe",
    "max_abs_difference",
    "mcq_features",
    "norms_figure",
    "paired_cosine",
    "probe_per_layer",
    "probes_figure",
    "reading",
    "split",
    "token_norms",
    "write_report",
]
