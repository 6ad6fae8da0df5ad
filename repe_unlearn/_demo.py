"""The whole pipeline on the embedded default: evaluate the shipped toy model, unlearn with RMU, evaluate again.

Writes ``report.md``, ``results.json``, PNG plots and the unlearned model to an output directory.
"""

import copy
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._outputs import OutputDir
from .attacks import AttackResult, ablate, gcg_suffix, relearn, with_suffix
from .data import read_mcq, read_texts
from .diagnostics import diagnose, reading, write_report
from .evaluation import evaluate_mcq, perplexity
from .plots import accuracy_bars, loss_curves, norm_curves, relearning_curve
from .rmu import preset, unlearn
from .rmu.artifacts import save_unlearned
from .robustness import battery
from .toy import SHIPPED_MODEL, SHIPPED_WORLD, load_shipped_model

CHANCE = 0.25  # four choices per question


@dataclass
class DemoResult:
    """Accuracies before and after, and where the outputs went."""

    out: Path
    before: dict[str, float]
    after: dict[str, float]
    perplexity: dict[str, float]
    seconds: dict[str, float]
    rmu: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    attacks: dict[str, Any] = field(default_factory=dict)
    robustness: dict[str, Any] = field(default_factory=dict)  # the battery's robustness.json


LETTER = ", letter"  # the suffix of the sets asked in lm-eval's letter format


def _evaluate(model: Any, tokenizer: Any, items: dict[str, Any]) -> dict[str, float]:
    return {
        name: evaluate_mcq(
            model, tokenizer, rows, format="letter" if name.endswith(LETTER) else "cloze", batch_size=64, name=name
        ).accuracy
        for name, rows in items.items()
    }


def run_demo(out: str | os.PathLike[str], *, overwrite: bool = False, progress: bool = True) -> DemoResult:
    """Run the demo and write its outputs to ``out`` (refused if it exists and is not empty)."""
    target = OutputDir(out, overwrite=overwrite, kind="demo")  # checked before any compute
    timings: dict[str, float] = {}
    start = time.perf_counter()
    model, tokenizer = load_shipped_model(letters=True)
    forget, retain = read_texts(SHIPPED_WORLD / "forget.jsonl"), read_texts(SHIPPED_WORLD / "retain.jsonl")
    items = {
        "forget (pathogens)": read_mcq(SHIPPED_WORLD / "forget_cloze.jsonl"),
        "retain (towns)": read_mcq(SHIPPED_WORLD / "retain_cloze.jsonl"),
        # lm-eval's letter format, about the entities whose letter questions the letter layers never saw
        "forget (pathogens)" + LETTER: read_mcq(SHIPPED_WORLD / "forget_letter_stem_unseen.jsonl"),
        "retain (towns)" + LETTER: read_mcq(SHIPPED_WORLD / "retain_letter_stem_unseen.jsonl"),
    }
    before = _evaluate(model, tokenizer, items)
    ppl_before = perplexity(model, tokenizer, retain)
    timings["evaluate before"] = time.perf_counter() - start

    start = time.perf_counter()
    # the toy preset's layers counted on the layers that hold the facts, below the two letter layers: it steers
    # layer 4 and updates 2-4, as on the shipped model alone
    depth = model.config.repe_unlearn_letters["frozen_layers"]
    steered = preset("toy", layer=depth - 2, update_layers=(depth - 4, depth - 3, depth - 2))
    # the retain corpus also covers the letter format (each town's paragraph, then two answered letter questions
    # about towns of the letter layers' training half): on the prose alone RMU keeps the towns' cloze answers
    # but not their letters (docs/toy-world.md)
    retain_rmu = read_texts(SHIPPED_WORLD / "retain_with_letters.jsonl")
    result = unlearn(model, tokenizer, [forget], [retain_rmu], steered, progress=progress)
    config = result.config
    timings["RMU"] = time.perf_counter() - start

    start = time.perf_counter()
    after = _evaluate(model, tokenizer, items)
    ppl_after = perplexity(model, tokenizer, retain)
    timings["evaluate after"] = time.perf_counter() - start

    start = time.perf_counter()
    base, _ = load_shipped_model(letters=True)
    diagnostics = diagnose(
        model,
        tokenizer,
        forget,
        retain,
        {"forget_cloze": items["forget (pathogens)"], "retain_cloze": items["retain (towns)"]},
        base=base,
        format="cloze",
        direction=result.directions[0],
        steered_layer=config.layer,
        updated_layers=config.layers_to_update,
    )
    timings["diagnostics"] = time.perf_counter() - start

    start = time.perf_counter()
    attacks = _attacks(model, tokenizer, result.directions[0], config.layer)
    timings["attacks"] = time.perf_counter() - start

    start = time.perf_counter()
    robustness = battery(
        model,
        tokenizer,
        forget_items=read_mcq(SHIPPED_WORLD / "forget_cloze.jsonl"),
        retain_items=items["retain (towns)"],
        relearn_texts=read_texts(SHIPPED_WORLD / "forget_a.jsonl"),
        unrelated_texts=retain,
        base=base,
        direction=result.directions[0],
        layer=config.layer,
        rephrased_items=read_mcq(SHIPPED_WORLD / "forget_rephrased_cloze.jsonl"),
        budget="quick",
        progress=progress,
    )
    timings["robustness battery"] = time.perf_counter() - start

    history = result.history
    rmu_summary = {
        "config": config.to_dict(),
        "steps": len(history),
        "steering_coeff": result.coefficients[0],
        "frozen_norm_at_layer": result.frozen_norms[0],
        "parameter_names": result.parameter_names,
        "final_forget_loss": history[-1].forget_loss,
        "final_retain_loss": history[-1].retain_loss,
    }
    perplexities = {"retain before": ppl_before, "retain after": ppl_after}
    demo = DemoResult(
        Path(out),
        before,
        after,
        perplexities,
        timings,
        rmu_summary,
        diagnostics.to_dict(),
        {name: a.to_dict() for name, a in attacks.items()},
        robustness.to_dict(),
    )

    def fill(tmp: Path) -> None:
        figures = {
            "accuracy.png": accuracy_bars(
                {name.replace(" (", "\n("): value for name, value in before.items()},
                {name.replace(" (", "\n("): value for name, value in after.items()},
                chance=CHANCE,
                title="Accuracy before and after RMU: cloze, and lm-eval's letter format",
            ),
            "losses.png": loss_curves([h.forget_loss for h in history], [h.retain_loss for h in history]),
            "norms.png": norm_curves(
                [h.forget_norm for h in history], [h.retain_norm for h in history], target=result.coefficients[0]
            ),
            "relearning.png": relearning_curve(
                [p.step for p in attacks["relearn"].curve],
                {k: [p.accuracy[k] for p in attacks["relearn"].curve] for k in attacks["relearn"].before},
                chance=CHANCE,
            ),
        }
        for name, figure in figures.items():
            figure.savefig(tmp / name, dpi=110)
        results = {
            "before": before,
            "after": after,
            "chance": CHANCE,
            "perplexity": demo.perplexity,
            "rmu": rmu_summary,
            "diagnostics": demo.diagnostics,
            "attacks": demo.attacks,
            "seconds": timings,
        }
        (tmp / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        write_report(diagnostics, tmp / "diagnostics")
        battery_section = "\n## Robustness battery (quick budget; `robustness.json`, `robustness.png`)\n\n"
        (tmp / "report.md").write_text(_report(demo, reading(diagnostics)) + battery_section + robustness.markdown())
        (tmp / "robustness.json").write_text(json.dumps(robustness.to_dict(), indent=2) + "\n")
        robustness.figure().savefig(tmp / "robustness.png", dpi=110)
        # written whole (base=None): the shipped model's checkpoint lacks the letter layers
        save_unlearned(tmp / "model", model, tokenizer, result, tokenizer_source=SHIPPED_MODEL)

    target.write(fill)
    return demo


def _report(demo: DemoResult, diagnostics_reading: list[str]) -> str:
    forget_key, retain_key = list(demo.before)[:2]
    forget_letter, retain_letter = forget_key + LETTER, retain_key + LETTER
    rmu = demo.rmu
    config = rmu["config"]
    rows = "\n".join(
        f"| {name.removesuffix(LETTER)} | {'letter (lm-eval)' if name.endswith(LETTER) else 'cloze'} | "
        f"{demo.before[name]:.3f} | {demo.after[name]:.3f} |"
        for name in demo.before
    )
    return f"""# repe-unlearn demo

The shipped toy model (a 6-layer Llama, d_model 128, trained from scratch on a fictitious world) knows 50 \
invented pathogens (the hazard-like domain to forget) and 50 invented towns (the benign domain to keep), four \
facts each. Two letter layers stacked on it (`repe-unlearn toy letters`; the six layers below are the shipped \
model's, unchanged) also answer those facts as WMDP-style letter questions, scored exactly as lm-eval scores \
WMDP; the letter rows ask about the 25 pathogens and 25 towns whose letter questions those layers never \
trained on, each question line being the words the prose states the fact in. RMU updated \
{", ".join(f"`{n}`" for n in rmu["parameter_names"])} for {rmu["steps"]} steps, \
steering layer {config["layer"]} towards c·u with c = {rmu["steering_coeff"]:.1f} \
({config["adaptive_coeff"]} × the frozen model's mean per-token norm there, {rmu["frozen_norm_at_layer"]:.1f}); \
the letter layers were not updated. The retain corpus was each town's paragraph followed by two answered letter \
questions about the towns of the letter layers' training half (`retain_with_letters.jsonl`): with the \
paragraphs alone RMU kept the towns' cloze answers but took their letter accuracy to chance.

| accuracy (4 choices, chance {CHANCE:.2f}) | format | before | after |
|---|---|---:|---:|
{rows}

Perplexity on the retain corpus: {demo.perplexity["retain before"]:.3f} before, \
{demo.perplexity["retain after"]:.3f} after.

![accuracy](accuracy.png)

![losses](losses.png)

![norms](norms.png)

## Reading

Forget-domain accuracy went from {demo.before[forget_key]:.2f} to {demo.after[forget_key]:.2f} in cloze form \
and from {demo.before[forget_letter]:.2f} to {demo.after[forget_letter]:.2f} in letter form \
(chance {CHANCE:.2f}), while retain-domain accuracy went from {demo.before[retain_key]:.2f} to \
{demo.after[retain_key]:.2f} (cloze) and from {demo.before[retain_letter]:.2f} to \
{demo.after[retain_letter]:.2f} (letter). On forget-domain text the activations at the steered layer now have a norm \
close to c, several times their original norm, while on retain text they stay where they were (norms.png).

What this shows is misdirection: the layers after ℓ no longer get usable facts about the pathogens. It does \
not show that the facts are gone from the weights — only three MLP projections changed, and the layers before \
them are untouched. Whether the knowledge comes back under relearning, direction ablation or adversarial \
suffixes is what the robustness attacks measure.

## Diagnostics (one caching pass per model; details in `diagnostics/report.md`)

![norms](diagnostics/norms.png)

![probes](diagnostics/probes.png)

{chr(10).join(f"- {line}" for line in diagnostics_reading)}

{_probe_verdict(demo)}

## Robustness: does the knowledge come back?

All three attacks start from the unlearned model; "held-out" facts are those of the 25 pathogens the attack \
never saw (`forget_b`), so accuracy regained there is knowledge that was still in the model.

| attack | evaluated on | before | after |
|---|---|---:|---:|
{_attack_rows(demo)}

![relearning](relearning.png)

Time: {", ".join(f"{k} {v:.1f} s" for k, v in demo.seconds.items())}. The unlearned model is in `model/` \
(`repe-unlearn eval --model model --mcq FILE --format cloze`, or `--format letter` with the world's \
`*_letter_stem*.jsonl` files, evaluates it).
"""


def probe_verdict(diagnostics: dict[str, Any], probe: str = "forget_cloze") -> tuple[float, float, bool]:
    """(base, unlearned) probe accuracy at the steered layer, and whether the unlearned model's is still
    closer to the base model's than to chance (the knowledge is hidden from later layers, not removed)."""
    layer = diagnostics["steered_layer"]
    base = diagnostics["probe_accuracy"]["base"][probe][layer]
    model = diagnostics["probe_accuracy"]["model"][probe][layer]
    chance = diagnostics["chance"][probe]
    return base, model, model - chance > (base - chance) / 2


def _probe_verdict(demo: DemoResult) -> str:
    base, model, hidden = probe_verdict(demo.diagnostics)
    layer = demo.diagnostics["steered_layer"]
    if hidden:
        return (
            f"A linear probe trained on the unlearned model's own activations at the end of each cloze stem still "
            f"reads the pathogen facts at layer {layer} ({model:.2f}; base {base:.2f}, chance {CHANCE:.2f}): on "
            "this toy world RMU hides the knowledge from the layers that follow rather than removing it from the "
            "residual stream, as the WMDP paper itself suspects."
        )
    return (
        f"A linear probe on the unlearned model's activations at layer {layer} reads the pathogen facts at "
        f"{model:.2f} (base {base:.2f}, chance {CHANCE:.2f}): the facts are no longer linearly readable there, "
        "which still does not rule out a non-linear read-out."
    )


def _attacks(model: Any, tokenizer: Any, direction: Any, layer: int) -> dict[str, AttackResult]:
    """Relearning on half the pathogens, direction ablation, and an adversarial suffix, on the unlearned model."""
    held_out = read_mcq(SHIPPED_WORLD / "forget_b_cloze.jsonl")
    seen = read_mcq(SHIPPED_WORLD / "forget_a_cloze.jsonl")
    retain_items = read_mcq(SHIPPED_WORLD / "retain_cloze.jsonl")

    def scorer(target: Any, sets: dict[str, Any]) -> Any:
        return lambda: {
            name: evaluate_mcq(target, tokenizer, items, format="cloze", batch_size=64).accuracy
            for name, items in sets.items()
        }

    sets = {"forget (held-out)": held_out, "retain": retain_items}
    results = {"ablate": ablate(model, direction, layer, evaluate=scorer(model, sets))}
    results["ablate"].details["direction"] = "the control vector u"
    found = gcg_suffix(model, tokenizer, seen, format="cloze", length=8, steps=30, progress=False)
    before = scorer(model, sets)()
    after = scorer(model, {name: with_suffix(items, found.text) for name, items in sets.items()})()
    results["suffix"] = AttackResult("suffix", before, after, details={"suffix": found.text})
    relearner = copy.deepcopy(model)
    texts = read_texts(SHIPPED_WORLD / "forget_a.jsonl")
    results["relearn"] = relearn(
        relearner,
        tokenizer,
        texts,
        steps=20,
        evaluate=scorer(relearner, sets),
        lr=1e-3,
        batch_size=8,
        eval_every=2,
        progress=False,
    )
    return results


def _attack_rows(demo: DemoResult) -> str:
    described = {
        "relearn": "fine-tune 20 steps on the other 25 pathogens' paragraphs",
        "ablate": "project u out of layers ℓ.. (no training)",
        "suffix": "GCG suffix optimised on the other 25 pathogens' questions",
    }
    rows = []
    for name, result in demo.attacks.items():
        for target in result["before"]:
            rows.append(
                f"| {described[name]} | {target} | {result['before'][target]:.2f} | {result['after'][target]:.2f} |"
            )
    return "\n".join(rows)
