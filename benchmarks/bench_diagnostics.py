"""Diagnostics on the toy model: wall time of the whole diagnosis, and the caching pass vs a plain forward.

Unlearns the shipped toy model with `--preset toy`, then diagnoses base and unlearned model side by side on
every toy input (forget and retain texts, the cloze and the letter MCQ files), all layers.

    python benchmarks/bench_diagnostics.py [--repeats 5]

"caching pass" is `cache_features` (record all layers, pool, norms, cosines) for both models; "plain forward"
is `model(**batch)` for both models over the same batches. Timings interleaved, medians.
"""

import argparse
import copy
import statistics
import time

import torch

from repe_unlearn import rmu
from repe_unlearn.data import read_mcq, read_texts, tokenize_batches
from repe_unlearn.diagnostics import cache_features, diagnose
from repe_unlearn.toy import SHIPPED_WORLD, load_shipped_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    base, tokenizer = load_shipped_model()
    model = copy.deepcopy(base)
    forget, retain = read_texts(SHIPPED_WORLD / "forget.jsonl"), read_texts(SHIPPED_WORLD / "retain.jsonl")
    result = rmu.unlearn(model, tokenizer, [forget], [retain], rmu.preset("toy"), progress=False)
    files = {
        name: read_mcq(SHIPPED_WORLD / f"{name}.jsonl")
        for name in ("forget_cloze", "retain_cloze", "forget_letter", "retain_letter")
    }
    cloze = {k: v for k, v in files.items() if "cloze" in k}
    letter = {k: v for k, v in files.items() if "letter" in k}
    models = {"base": base, "model": model}

    def full_diagnosis() -> None:
        for format, mcq in (("cloze", cloze), ("letter", letter)):
            diagnose(
                model,
                tokenizer,
                forget,
                retain,
                mcq,
                base=base,
                format=format,  # type: ignore[arg-type]
                direction=result.directions[0],
                steered_layer=4,
                updated_layers=[2, 3, 4],
            )

    def caching_pass() -> None:
        for format, mcq in (("cloze", cloze), ("letter", letter)):
            cache_features(
                models,
                tokenizer,
                forget,
                retain,
                mcq,
                format=format,  # type: ignore[arg-type]
                direction=result.directions[0],
            )

    prompts = [item.question for items in cloze.values() for item in items]
    from repe_unlearn.data import letter_prompt

    prompts += [letter_prompt(item) for items in letter.values() for item in items]

    @torch.no_grad()
    def plain_forward() -> None:  # tokenising included, as in the caching pass
        for texts in (forget, retain, forget, retain, prompts):
            for batch in tokenize_batches(tokenizer, texts, 32):
                for m in models.values():
                    m(**batch, use_cache=False)

    cases = {"full diagnosis": full_diagnosis, "caching pass": caching_pass, "plain forward": plain_forward}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(times) for name, times in samples.items()}
    print(
        f"toy model, base + unlearned, all 6 layers, {len(forget) + len(retain)} texts and "
        f"{sum(len(v) for v in files.values())} questions; median of {args.repeats}"
    )
    for name, seconds in medians.items():
        print(f"{name:<18}{seconds:8.2f} s")
    print(f"caching pass / plain forward: {medians['caching pass'] / medians['plain forward']:.2f}x")


if __name__ == "__main__":
    main()
