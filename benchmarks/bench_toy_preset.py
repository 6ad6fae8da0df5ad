"""`--preset toy` across toy worlds: forget/retain cloze accuracy before and after RMU, per world seed.

For each seed: `toy world`, `toy pretrain` (same seed), then RMU with the toy preset.

    python benchmarks/bench_toy_preset.py [--seeds 0 1 2]

Target (issue 4): forget accuracy <= 0.32 (chance 0.25 + 7 points), retain drop <= 2 points.
"""

import argparse
import tempfile
import time
from typing import Any

from repe_unlearn import rmu
from repe_unlearn.data import read_texts
from repe_unlearn.evaluation import MCQItem, evaluate_mcq, read_mcq
from repe_unlearn.toy import PretrainConfig, World, pretrain, write_world


def accuracies(model: Any, tokenizer: Any, *item_sets: list[MCQItem]) -> tuple[float, ...]:
    return tuple(evaluate_mcq(model, tokenizer, items, format="cloze", batch_size=64).accuracy for items in item_sets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--layers", type=int, default=6, help="decoder layers (6, as measured; toy pretrain makes 4)")
    parser.add_argument(
        "--init-std", type=float, default=0.02, help="initial weights' std (0.02, as measured; toy pretrain uses 0.05)"
    )
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        files = write_world(World.generate(seed, 50), tempfile.mkdtemp() + "/world")
        start = time.perf_counter()
        corpus = read_texts(files["forget"]) + read_texts(files["retain"])
        forget_items, retain_items = read_mcq(files["forget_cloze"]), read_mcq(files["retain_cloze"])
        checks = {"forget": forget_items, "retain": retain_items}  # trained until both are known
        model, tokenizer, _ = pretrain(
            corpus,
            PretrainConfig(seed=seed, n_layers=args.layers, init_std=args.init_std),
            eval_items=checks,
            progress=False,
        )
        pretrain_s = time.perf_counter() - start

        before = accuracies(model, tokenizer, forget_items, retain_items)
        start = time.perf_counter()
        result = rmu.unlearn(
            model,
            tokenizer,
            [read_texts(files["forget"])],
            [read_texts(files["retain"])],
            rmu.preset("toy"),
            progress=False,
        )
        rmu_s = time.perf_counter() - start
        after = accuracies(model, tokenizer, forget_items, retain_items)
        rows.append((seed, pretrain_s, before, after, rmu_s, result.coefficients[0]))
        print(
            f"seed {seed}: pretrain {pretrain_s:.0f} s, forget {before[0]:.3f} -> {after[0]:.3f}, "
            f"retain {before[1]:.3f} -> {after[1]:.3f}, RMU {rmu_s:.1f} s",
            flush=True,
        )
    print()
    print("| world seed | pretrain s | forget before | forget after | retain before | retain after | RMU s | c |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for seed, pretrain_s, before, after, rmu_s, c in rows:
        print(
            f"| {seed} | {pretrain_s:.0f} | {before[0]:.3f} | {after[0]:.3f} | {before[1]:.3f} | {after[1]:.3f} "
            f"| {rmu_s:.1f} | {c:.0f} |"
        )
    ok = all(after[0] <= 0.32 and before[1] - after[1] <= 0.02 for _, _, before, after, _, _ in rows)
    print(f"\ntarget (forget <= 0.32, retain drop <= 0.02) met on every seed: {ok}")


if __name__ == "__main__":
    main()
