"""Diagnostics on disk: ``diagnostics.json``, PNG plots with the steered and updated layers marked, ``report.md``."""

import json
import os
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .run import Diagnostics

_COLORS = {"forget": "#c44e52", "retain": "#55a868"}


def _mark_layers(ax: Axes, diagnostics: Diagnostics) -> None:
    if diagnostics.updated_layers:
        lo, hi = min(diagnostics.updated_layers), max(diagnostics.updated_layers)
        ax.axvspan(lo - 0.5, hi + 0.5, color="#f0e0a0", alpha=0.5, label="updated layers")
    if diagnostics.steered_layer is not None:
        ax.axvline(diagnostics.steered_layer, color="black", linestyle=":", linewidth=1, label="steered layer")


def norms_figure(diagnostics: Diagnostics) -> Figure:
    """Mean per-token residual norm per layer on forget and retain text, base (dashed) vs model (solid)."""
    fig = Figure(figsize=(6, 3.8), layout="constrained")
    ax = fig.subplots()
    _mark_layers(ax, diagnostics)
    for name, style in (("base", "--"), ("model", "-")):
        for domain in ("forget", "retain"):
            if name in diagnostics.norms:
                ax.plot(
                    diagnostics.layers,
                    diagnostics.norms[name][domain],
                    style,
                    marker="o",
                    markersize=3,
                    color=_COLORS[domain],
                    label=f"{name}, {domain}",
                )
    ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel("mean per-token norm")
    ax.set_title("Residual-stream norm per layer")
    ax.legend(fontsize=7)
    return fig


def probes_figure(diagnostics: Diagnostics) -> Figure:
    """Held-out probe accuracy per layer for each probe, base (dashed) vs model (solid), chance dotted."""
    names = list(next(iter(diagnostics.probe_accuracy.values())))
    fig = Figure(figsize=(6, 2.6 * len(names)), layout="constrained")
    axes = fig.subplots(len(names), 1, squeeze=False)[:, 0]
    for ax, probe in zip(axes, names, strict=True):
        _mark_layers(ax, diagnostics)
        for name, style in (("base", "--"), ("model", "-")):
            if name in diagnostics.probe_accuracy:
                ax.plot(
                    diagnostics.layers,
                    diagnostics.probe_accuracy[name][probe],
                    style,
                    marker="o",
                    markersize=3,
                    label=name,
                )
        ax.axhline(diagnostics.chance[probe], color="grey", linestyle=":", label="chance")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"probe: {probe}", fontsize=9)
        ax.set_ylabel("held-out accuracy")
        ax.legend(fontsize=7)
    axes[-1].set_xlabel("layer")
    return fig


def _fmt(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def reading(diagnostics: Diagnostics) -> list[str]:
    """A short, computed reading of the figures (no claim that the numbers do not support)."""
    lines = []
    norms = diagnostics.norms
    if "base" in norms:
        for domain in ("forget", "retain"):
            ratios = [m / b for m, b in zip(norms["model"][domain], norms["base"][domain], strict=True)]
            lines.append(f"Norm ratio model/base on {domain} text, per layer: {_fmt(ratios)}.")
        diffs = diagnostics.max_abs_difference_from_base.get("forget", [])
        identical = [i for i, d in enumerate(diffs) if d == 0.0]
        if identical:
            lines.append(
                f"Layers {identical[0]}..{identical[-1]} give bit-identical activations in both models: RMU changed "
                "nothing below its first updated layer."
            )
        for probe, base_acc in diagnostics.probe_accuracy["base"].items():
            model_acc = diagnostics.probe_accuracy["model"][probe]
            lines.append(
                f"Probe '{probe}' (chance {diagnostics.chance[probe]:.2f}): best layer {max(base_acc):.2f} in the "
                f"base model, {max(model_acc):.2f} in the model; after the steered layer "
                f"{_after(diagnostics, base_acc):.2f} vs {_after(diagnostics, model_acc):.2f} on average."
            )
    else:
        for probe, acc in diagnostics.probe_accuracy["model"].items():
            lines.append(f"Probe '{probe}' (chance {diagnostics.chance[probe]:.2f}) per layer: {_fmt(acc)}.")
    return lines


def _after(diagnostics: Diagnostics, values: list[float]) -> float:
    start = diagnostics.steered_layer if diagnostics.steered_layer is not None else 0
    tail = values[start:]
    return sum(tail) / len(tail)


def write_report(diagnostics: Diagnostics, out: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``diagnostics.json``, ``norms.png``, ``probes.png`` and ``report.md`` into ``out`` (a directory)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "diagnostics.json",
        "norms": out / "norms.png",
        "probes": out / "probes.png",
        "report": out / "report.md",
    }
    paths["json"].write_text(json.dumps(diagnostics.to_dict(), indent=2) + "\n")
    norms_figure(diagnostics).savefig(paths["norms"], dpi=110)
    probes_figure(diagnostics).savefig(paths["probes"], dpi=110)
    text = ["# Diagnostics", ""]
    if diagnostics.steered_layer is not None:
        text += [f"Steered layer {diagnostics.steered_layer}; updated layers {diagnostics.updated_layers}.", ""]
    text += ["![norms](norms.png)", "", "![probes](probes.png)", "", "## Reading", ""]
    text += [f"- {line}" for line in reading(diagnostics)]
    text += [
        "",
        "Probe accuracy falling towards chance says the information is no longer *linearly* readable at that "
        "layer on these inputs; it does not say the information is gone (a non-linear read-out, or the layers "
        "below the update, may still hold it).",
    ]
    paths["report"].write_text("\n".join(text) + "\n")
    return paths
