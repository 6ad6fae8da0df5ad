"""Figures for reports and notebooks: matplotlib ``Figure`` objects, made without pyplot (no GUI backend)."""

from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure


def accuracy_bars(
    before: Mapping[str, float], after: Mapping[str, float], *, chance: float | None = None, title: str = ""
) -> Figure:
    """Grouped bars: accuracy per evaluation set, before and after."""
    fig = Figure(figsize=(max(5.5, 1.5 * len(before) + 1.0), 3.6), layout="constrained")
    ax = fig.subplots()
    names = list(before)
    xs = range(len(names))
    width = 0.38
    bars_before = ax.bar(
        [x - width / 2 for x in xs], [before[n] for n in names], width, label="before", color="#4c72b0"
    )
    bars_after = ax.bar([x + width / 2 for x in xs], [after[n] for n in names], width, label="after", color="#dd8452")
    for bars in (bars_before, bars_after):
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({chance:.2f})")
    ax.set_xticks(list(xs), names)
    ax.set_ylim(0, 1.3)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper center", ncol=3, fontsize=8, frameon=False)
    return fig


def loss_curves(forget: Sequence[float], retain: Sequence[float], *, title: str = "RMU losses") -> Figure:
    """Forget and retain loss per step, on a log scale."""
    fig = Figure(figsize=(5.5, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.plot(range(len(forget)), forget, label="forget loss (MSE to c·u)", color="#c44e52")
    ax.plot(range(len(retain)), [max(r, 1e-12) for r in retain], label="retain loss (α·MSE to frozen)", color="#55a868")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def norm_curves(forget: Sequence[float], retain: Sequence[float], *, target: float | None = None) -> Figure:
    """Mean per-token norm of the steered layer's output during training, on forget and retain batches."""
    fig = Figure(figsize=(5.5, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.plot(range(len(forget)), forget, label="forget batches", color="#c44e52")
    ax.plot(range(len(retain)), retain, label="retain batches", color="#55a868")
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target norm c = {target:.0f}")
    ax.set_xlabel("step")
    ax.set_ylabel("mean per-token norm of h_ℓ")
    ax.set_title("Activation norm at the steered layer")
    ax.legend(fontsize=8)
    return fig


def relearning_curve(
    steps: Sequence[int], accuracy: Mapping[str, Sequence[float]], *, chance: float | None = None
) -> Figure:
    """Accuracy per evaluation set against fine-tuning steps of a relearning attack."""
    fig = Figure(figsize=(5.5, 3.4), layout="constrained")
    ax = fig.subplots()
    for name, values in accuracy.items():
        ax.plot(steps, values, marker="o", markersize=3, label=name)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("relearning step")
    ax.set_ylabel("accuracy")
    ax.set_title("Relearning attack")
    ax.legend(fontsize=8)
    return fig


def robustness_bars(
    attacks: Sequence[str],
    after: Sequence[float],
    unlearned: float,
    *,
    base: float | None,
    chance: float,
    own_base: Sequence[float | None] | None = None,
) -> Figure:
    """One bar per attack (held-out forget accuracy after it), beside the base and unlearned levels and chance.

    ``own_base``: per attack, the base model measured the same way where that differs from the plain questions
    (rephrased questions, a probe), drawn as a short blue tick over the bar."""
    fig = Figure(figsize=(max(5.5, 0.55 * len(attacks) + 2), 3.8), layout="constrained")
    ax = fig.subplots()
    bars = ax.bar(range(len(attacks)), after, color="#dd8452", label="after the attack")
    ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ticks = [(i, b) for i, b in enumerate(own_base or []) if b is not None and b != base]
    if ticks:
        xs, ys = zip(*ticks, strict=True)
        ax.scatter(xs, ys, marker="_", s=300, color="#4c72b0", linewidths=2, label="base, measured alike", zorder=3)
    if base is not None:
        ax.axhline(base, color="#4c72b0", linewidth=1.2, label=f"base model ({base:.2f})")
    ax.axhline(unlearned, color="#c44e52", linewidth=1.2, label=f"unlearned ({unlearned:.2f})")
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({chance:.2f})")
    ax.set_xticks(list(range(len(attacks))), attacks, rotation=40, ha="right", fontsize=8)
    ax.set_ylim(0, 1.3)
    ax.set_ylabel("forget accuracy, held-out")
    ax.set_title("does the forgotten knowledge come back?")
    ax.legend(loc="upper center", ncol=2, fontsize=7, frameon=False)
    return fig
