"""Does a toy model learn the letter format when a world's letter questions are mixed into its pretraining?

Pretrains the default toy architecture for a fixed number of steps (one cosine cycle) on a world's prose,
repeated ``--prose-copies`` times, mixed with ``--variants`` answered copies (choices shuffled anew) of each
letter question about the first half of the entities (`letter_train.jsonl`'s questions), optionally with
``--aux`` dense binding documents ("A. ..\\nD. ..\\n<value>\\nAnswer: C" for each value in turn). Every
``--every`` steps it prints the letter accuracy on 100 trained ("seen") questions in *fresh* choice orders,
on 100 questions about the other half ("unseen"), and the cloze accuracy on 100 forget facts.

    python benchmarks/probe_letter_world.py [--world DIR] [--steps 6000] [--aux 3000] [--threads 1]

Measured (docs/toy-world.md, the shipped world, one thread): cloze 1.00 from step 1000, letter accuracy
near chance through 6000 steps (seen 0.46, unseen 0.24 at the end; with --aux 3000: 0.25 / 0.28).
"""

import argparse
import importlib
import random
import time

import torch
import transformers as tf

from repe_unlearn.data import LETTERS, MCQItem, letter_prompt, read_mcq, read_texts
from repe_unlearn.evaluation import evaluate_mcq
from repe_unlearn.toy import SHIPPED_WORLD, PretrainConfig

pretraining = importlib.import_module("repe_unlearn.toy.pretrain")  # the module, not the function


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default=str(SHIPPED_WORLD), help="a directory written by `toy world`")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--prose-copies", type=int, default=16)
    parser.add_argument("--variants", type=int, default=8)
    parser.add_argument("--aux", type=int, default=0, help="dense binding documents to add")
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = random.Random(0)
    world = args.world
    prose = read_texts(f"{world}/forget.jsonl") + read_texts(f"{world}/retain.jsonl")
    questions = read_mcq(f"{world}/forget_letter.jsonl") + read_mcq(f"{world}/retain_letter.jsonl")
    unseen = read_mcq(f"{world}/forget_letter_unseen.jsonl") + read_mcq(f"{world}/retain_letter_unseen.jsonl")
    unseen_entities = {item.entity for item in unseen}
    seen = [item for item in questions if item.entity not in unseen_entities]

    def shuffled(item: MCQItem) -> MCQItem:
        choices = list(item.choices)
        rng.shuffle(choices)
        return MCQItem(item.question, tuple(choices), choices.index(item.choices[item.answer]), item.entity)

    letters = [
        f"{letter_prompt(asked)} {LETTERS[asked.answer]}"
        for item in seen
        for asked in (shuffled(item) for _ in range(args.variants))
    ]
    pools: dict[str, set[str]] = {}
    for item in questions:
        pools.setdefault(item.question.replace(item.entity or "", "{}"), set()).update(item.choices)
    values = [sorted(pool) for pool in pools.values()]
    aux = []
    for _ in range(args.aux):
        shown = rng.sample(rng.choice(values), 4)
        head = "".join(f"{LETTERS[i]}. {c}\n" for i, c in enumerate(shown))
        aux.append(head + "\n".join(f"{shown[i]}\nAnswer: {LETTERS[i]}" for i in rng.sample(range(4), 4)))
    texts = prose * args.prose_copies + letters + aux
    probe = random.Random(5)
    sets = {
        "seen": ([shuffled(item) for item in probe.sample(seen, 100)], "letter"),
        "unseen": (probe.sample(unseen, 100), "letter"),
        "cloze": (read_mcq(f"{world}/forget_cloze.jsonl")[:100], "cloze"),
    }
    print(f"{len(prose) * args.prose_copies} prose, {len(letters)} letter, {len(aux)} binding documents", flush=True)

    built: dict[str, object] = {}  # the model and tokenizer `pretrain` builds, caught as they are made

    class Caught(tf.LlamaForCausalLM):  # type: ignore[misc]
        def __init__(self, *a: object, **k: object) -> None:
            super().__init__(*a, **k)  # type: ignore[arg-type]
            built["model"] = self

    train_tokenizer = pretraining.train_tokenizer  # type: ignore[attr-defined]

    def caught_tokenizer(*a: object, **k: object) -> object:
        built["tokenizer"] = train_tokenizer(*a, **k)  # type: ignore[arg-type]
        return built["tokenizer"]

    pretraining.tf.LlamaForCausalLM = Caught  # type: ignore[misc,attr-defined]
    pretraining.train_tokenizer = caught_tokenizer  # type: ignore[attr-defined]
    start = time.perf_counter()

    def report(step: int, loss: float) -> None:
        if (step + 1) % args.every:
            return
        model, tokenizer = built["model"], built["tokenizer"]
        model.eval()  # type: ignore[attr-defined]
        accuracy = {
            name: evaluate_mcq(model, tokenizer, items, format=form, batch_size=64).accuracy  # type: ignore[arg-type]
            for name, (items, form) in sets.items()
        }
        print(
            f"step {step + 1}  {time.perf_counter() - start:.0f} s  loss {loss:.3f}  "
            + "  ".join(f"{name} {value:.2f}" for name, value in accuracy.items()),
            flush=True,
        )

    config = PretrainConfig(steps=args.steps, max_seconds=1e6)
    pretraining.pretrain(texts, config, progress=False, on_step=report)


if __name__ == "__main__":
    main()
