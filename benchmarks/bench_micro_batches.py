"""Pretraining steps run in micro-batches of like lengths against the whole padded batch, side by side.

`toy pretrain` pads a step's documents to the longest of them. When their lengths differ by more than a
forward and backward pass costs (`pretrain.PASS_COST` tokens), it runs the long and the short ones as separate
passes (`pretrain.micro_batches`), each padded to its own longest, and adds up their gradients: the same
gradient, fewer padded tokens. This times one forward and backward pass of the default toy model over the same
batches both ways, interleaved (the machines are noisy), on each world of `bench_toy_worlds.py` and on a corpus
of mixed lengths (the shipped world's prose with its answered letter questions and longer paragraphs).

    python benchmarks/bench_micro_batches.py [--worlds C A shipped mixed] [--batches 20] [--repeats 3]
        [--pass-cost 150]
"""

import argparse
import importlib
import random
import tempfile
import time

import torch
from bench_toy_worlds import WORLDS

from repe_unlearn.data import read_texts, tokenize_batches
from repe_unlearn.toy import SHIPPED_WORLD, PretrainConfig, World, write_world

pretraining = importlib.import_module("repe_unlearn.toy.pretrain")  # the module: the package exports the function


def corpus(name: str) -> list[str]:
    if name == "mixed":
        prose = read_texts(SHIPPED_WORLD / "forget.jsonl") + read_texts(SHIPPED_WORLD / "retain.jsonl")
        letters = read_texts(SHIPPED_WORLD / "letter_train.jsonl")[:200]
        return prose + letters + [" ".join(prose[i : i + 6]) for i in range(0, len(prose), 6)]
    spec = dict(WORLDS[name])
    world = World.generate(spec.pop("seed"), spec.pop("entities"), **spec)
    files = write_world(world, tempfile.mkdtemp() + "/world")
    return read_texts(files["forget"]) + read_texts(files["retain"])


def step(
    model: torch.nn.Module,
    tokenizer: object,
    chosen: list[str],
    batch: dict[str, torch.Tensor],
    split: bool,
    pass_cost: int,
) -> int:
    """One forward and backward pass over ``batch``, whole or in micro-batches; returns the passes run."""
    label_sets = pretraining._labels(tokenizer, chosen, batch)
    counts = [pretraining._targets(labels) for labels in label_sets]
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    groups = pretraining.micro_batches(lengths, pass_cost) if split else [list(range(len(lengths)))]
    for rows in groups:
        width = max(lengths[row] for row in rows)
        part = {k: v[rows, :width] for k, v in batch.items()}
        pretraining._loss(model(**part).logits, [labels[rows, :width] for labels in label_sets], counts).backward()
    return len(groups)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", nargs="+", default=["C", "A", "shipped", "mixed"], choices=[*WORLDS, "mixed"])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--pass-cost", type=int, default=pretraining.PASS_COST, help="what a pass costs, in tokens (the DP's price)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = PretrainConfig()
    print(
        "| corpus | tokens per document (mean, range) | passes per step | whole batch (s) | micro-batches (s) | ratio |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for name in args.worlds:
        texts = corpus(name)
        tokenizer = pretraining.train_tokenizer(texts, config.vocab_size)
        model = pretraining.build_model(config, tokenizer).train()
        rng = random.Random(0)
        batches = []
        for _ in range(args.batches):
            chosen = rng.sample(texts, config.batch_size)
            batch = next(tokenize_batches(tokenizer, [t + tokenizer.eos_token for t in chosen], len(chosen)))
            batches.append((chosen, batch))

        seconds = {False: 0.0, True: 0.0}
        passes = 0
        for _ in range(args.repeats):
            for chosen, batch in batches:
                for split in (False, True):
                    began = time.perf_counter()
                    used = step(model, tokenizer, chosen, batch, split, args.pass_cost)
                    seconds[split] += time.perf_counter() - began
                    passes += used if split else 0
        lengths = [len(tokenizer(t)["input_ids"]) + 1 for t in texts]
        print(
            f"| {name} | {sum(lengths) / len(lengths):.0f} ({min(lengths)}-{max(lengths)}) "
            f"| {passes / (args.repeats * args.batches):.1f} | {seconds[False]:.2f} | {seconds[True]:.2f} "
            f"| {seconds[True] / seconds[False]:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
