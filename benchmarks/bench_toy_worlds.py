"""The toy lab on worlds it was not built for: pretraining until learned, RMU, and the robustness battery.

For each world below: `toy world` with those options, `toy pretrain` until both cloze sets reach the target
(defaults of `PretrainConfig`), RMU with `--preset toy`, then the quick robustness battery (every attack, with
the world's rephrased questions). Prints two markdown tables: pretraining (seconds, steps, how it stopped,
cloze accuracy per domain, letter-format accuracy on entities whose letter questions were never trained on)
and the battery (held-out forget accuracy after each attack).

    python benchmarks/bench_toy_worlds.py [--worlds shipped A B] [--no-battery] [--target 0.95] [--batch-size 8]
        [--layers 6] [--init-std 0.02 0.05] [--lr 3e-3 2e-3] [--letters]

``--letters`` also runs `toy letters` (`train_letters`, `LetterConfig`'s defaults) on each pretrained model and
adds its letter accuracy on the unseen entities, forget and retain, to the pretraining table.

Targets (issue 17): >= 0.95 cloze accuracy on both domains in <= 60 s on 2 CPU cores, every world.
"""

import argparse
import copy
import tempfile
import time
from typing import Any

import torch

from repe_unlearn import rmu
from repe_unlearn.data import read_texts
from repe_unlearn.evaluation import evaluate_mcq, read_mcq
from repe_unlearn.robustness import battery
from repe_unlearn.toy import PretrainConfig, World, pretrain, train_letters, world_letters, write_world

WORLDS: dict[str, dict[str, Any]] = {
    "shipped": {"seed": 0, "entities": 50},
    "A": {"seed": 11, "entities": 48, "forget_domain": "compounds", "retain_domain": "ships", "form": "varied",
          "order": "shuffled"},
    "B": {"seed": 12, "entities": 100, "order": "shuffled"},
    "C": {"seed": 13, "entities": 100, "forget_domain": "compounds", "form": "varied", "syllables": (3, 4)},
    "D": {"seed": 14, "entities": 80, "retain_domain": "ships", "syllables": (1, 2)},
    "E": {"seed": 15, "entities": 64, "forget_domain": "compounds", "retain_domain": "ships", "order": "shuffled",
          "syllables": (2, 4)},
}  # fmt: skip


def describe(spec: dict[str, Any]) -> str:
    options = {"forget_domain": "pathogens", "retain_domain": "towns", "form": "plain", "order": "fixed"} | spec
    low, high = options.get("syllables", (2, 3))
    return (
        f"{options['forget_domain']}/{options['retain_domain']}, {options['entities']} each, {options['form']}, "
        f"{options['order']}, {low}-{high} syllables, seed {options['seed']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", nargs="+", default=list(WORLDS), choices=list(WORLDS))
    parser.add_argument("--no-battery", action="store_true", help="pretraining only")
    parser.add_argument(
        "--target", type=float, default=PretrainConfig().target, help="pretraining's target (the issue asks 0.95)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=PretrainConfig().batch_size, help="pretraining's documents per step"
    )
    parser.add_argument(
        "--layers", type=int, default=PretrainConfig().n_layers, help="the model's decoder layers (4 by default)"
    )
    parser.add_argument(
        "--init-std",
        type=float,
        nargs="+",
        default=[PretrainConfig().init_std],
        help="initial weights' standard deviation; several values run each world with each, side by side",
    )
    parser.add_argument(
        "--lr",
        type=float,
        nargs="+",
        default=[PretrainConfig().lr],
        help="pretraining's peak learning rate; several values run each world with each, side by side",
    )
    parser.add_argument("--letters", action="store_true", help="also run `toy letters` on each pretrained model")
    args = parser.parse_args()
    torch.set_num_threads(2)
    pretraining, batteries = [], []
    runs = [(name, std, lr) for name in args.worlds for std in args.init_std for lr in args.lr]
    for name, std, lr in runs:
        spec = dict(WORLDS[name])
        world = World.generate(spec.pop("seed"), spec.pop("entities"), **spec)
        files = write_world(world, tempfile.mkdtemp() + "/world")
        forget, retain = read_texts(files["forget"]), read_texts(files["retain"])
        cloze = {"forget": read_mcq(files["forget_cloze"]), "retain": read_mcq(files["retain_cloze"])}
        config = PretrainConfig(
            target=args.target,
            batch_size=args.batch_size,
            n_layers=args.layers,
            init_std=std,
            lr=lr,
            max_seconds=1e6,
        )
        model, tokenizer, _ = pretrain(forget + retain, config, eval_items=cloze, progress=False)
        run = model.config.repe_unlearn_pretrain
        acc = {k: evaluate_mcq(model, tokenizer, v, format="cloze", batch_size=64).accuracy for k, v in cloze.items()}
        letter = evaluate_mcq(model, tokenizer, read_mcq(files["forget_letter_unseen"]), format="letter").accuracy
        varied = [f"std {std}"] * (len(args.init_std) > 1) + [f"lr {lr:g}"] * (len(args.lr) > 1)
        label = f"{name} ({', '.join(varied)})" if varied else name
        stacked: dict[str, float] = {}
        if args.letters:
            sets = world_letters(files["world"].parent)
            letter_model, letter_run = train_letters(model, tokenizer, sets.prose, sets.trained, progress=False)
            stacked = {
                part: evaluate_mcq(letter_model, tokenizer, items, format="letter", batch_size=64).accuracy
                for part, items in (("forget", sets.forget_unseen), ("retain", sets.retain_unseen))
            }
            stacked["seconds"] = letter_run.seconds
        pretraining.append((label, describe(WORLDS[name]), run, acc, letter, stacked))
        summary = f"{run['seconds']:.0f} s, {run['steps_run']} steps, {run['stopped']}, {acc} {stacked}"
        print(f"{label}: {summary}", flush=True)
        if args.no_battery:
            continue
        base = copy.deepcopy(model)
        start = time.perf_counter()
        result = rmu.unlearn(model, tokenizer, [forget], [retain], rmu.preset("toy"), progress=False)
        rmu_seconds = time.perf_counter() - start
        retain_after = evaluate_mcq(model, tokenizer, cloze["retain"], format="cloze", batch_size=64).accuracy
        found = battery(
            model, tokenizer, forget_items=cloze["forget"], retain_items=cloze["retain"],
            relearn_texts=read_texts(files["forget_a"]), unrelated_texts=retain, base=base,
            direction=result.directions[0], layer=result.config.layer,
            rephrased_items=read_mcq(files["forget_rephrased_cloze"]), budget="quick", progress=False,
        )  # fmt: skip
        batteries.append((label, found, rmu_seconds, retain_after))
        print(found.markdown(), flush=True)
    extra = " letters: forget unseen | retain unseen | seconds |" if args.letters else ""
    print("\n| world | options | seconds | steps | stopped | forget cloze | retain cloze | letter, unseen |" + extra)
    print("|---|---|---:|---:|---|---:|---:|---:|" + "---:|" * (3 * args.letters))
    for name, text, run, acc, letter, stacked in pretraining:
        cells = f" {stacked['forget']:.3f} | {stacked['retain']:.3f} | {stacked['seconds']:.0f} |" if stacked else ""
        print(
            f"| {name} | {text} | {run['seconds']:.0f} | {run['steps_run']} | {run['stopped']} | "
            f"{acc['forget']:.3f} | {acc['retain']:.3f} | {letter:.3f} |{cells}"
        )
    if batteries:
        attacks = [row.attack for row in batteries[0][1].rows]
        print("\nHeld-out forget accuracy (cloze): base, after RMU, after each attack (quick budget).\n")
        print("| world | base | RMU | retain: base → RMU | RMU s | " + " | ".join(attacks) + " |")
        print("|---|" + "---:|" * (4 + len(attacks)))
        for name, found, seconds, retain_after in batteries:
            after = {row.attack: row.forget_after for row in found.rows}
            assert found.base is not None
            cells = " | ".join(f"{after[a]:.2f}" if a in after else "" for a in attacks)
            print(
                f"| {name} | {found.base['forget']:.2f} | {found.rows[0].forget_before:.2f} | "
                f"{found.base['retain']:.2f} → {retain_after:.2f} | {seconds:.0f} | {cells} |"
            )


if __name__ == "__main__":
    main()
