"""Does a toy model learn the letter format when a world's letter questions are mixed into its pretraining?

Pretrains the default toy architecture for a fixed number of steps (one cosine cycle) on a world's prose,
repeated ``--prose-copies`` times, mixed with ``--variants`` answered copies (choices shuffled anew) of each
letter question about the first half of the entities (`letter_train.jsonl`'s questions), optionally with
``--aux`` dense binding documents ("A. ..\\nD. ..\\n<value>\\nAnswer: C" for each value in turn; with
``--aux-form value``, a letter question whose question line is the right value itself), ``--open``
copies of each trained question answered in words, ``--incontext`` questions about made-up names whose
facts are stated just above; ``--stem`` asks every letter question with the cloze stem of its fact. Every
``--every`` steps it prints the letter accuracy on 100 trained ("seen") questions in *fresh* choice orders,
on 100 questions about the other half ("unseen"), the unseen questions answered in words ("open unseen",
cloze-scored), the cloze accuracy on 100 forget facts, with ``--incontext`` 100 fresh made-up questions,
and with ``--aux-form value`` 100 fresh binding questions ("value").

    python benchmarks/probe_letter_world.py [--world DIR] [--steps 6000] [--aux 3000 [--aux-form value]] [--threads 1]
        [--init-std 0.1 --lr 1e-3] [--stem] [--layers 10] [--open 8] [--incontext 3000]

Measured (docs/toy-world.md, the shipped world, one thread): with the loss on every token that `pretrain`
used before (std 0.02, lr 3e-3), letter accuracy near chance through 6000 steps (seen 0.46, unseen 0.24).
With --init-std 0.1 --lr 1e-3 (and the answer-only loss `pretrain` now uses) the trained questions are
learned (0.55 at 2000 steps; --stem --layers 10: 0.94 at 3000) while the unseen stay at chance (0.16-0.22
in every variant).
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


def stemmed(world: str, rows: list[MCQItem]) -> list[MCQItem]:
    """The same questions asked with the cloze stem of their fact (the words the prose states it in)."""
    stems = {}
    for part in ("forget", "retain"):
        for item in read_mcq(f"{world}/{part}_cloze.jsonl"):
            stems[item.entity, item.choices[item.answer], item.choices] = item.question
    return [MCQItem(stems[i.entity, i.choices[i.answer], i.choices], i.choices, i.answer, i.entity) for i in rows]


def shuffled(item: MCQItem, rng: random.Random) -> MCQItem:
    """``item`` with its choices in a fresh order."""
    choices = list(item.choices)
    rng.shuffle(choices)
    return MCQItem(item.question, tuple(choices), choices.index(item.choices[item.answer]), item.entity)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default=str(SHIPPED_WORLD), help="a directory written by `toy world`")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--prose-copies", type=int, default=16)
    parser.add_argument("--variants", type=int, default=8)
    parser.add_argument("--aux", type=int, default=0, help="dense binding documents to add")
    parser.add_argument(
        "--aux-form",
        choices=["lookup", "value"],
        default="lookup",
        help="lookup: four choices, then each value asked in turn; value: a letter question whose question is the "
        "right value itself (the binding task that forms within 500 steps at --init-std 0.1)",
    )
    parser.add_argument("--open", type=int, default=0, help="copies of each seen question answered in words")
    parser.add_argument("--stem", action="store_true", help="ask letter questions with the cloze stem")
    parser.add_argument(
        "--incontext",
        type=int,
        default=0,
        help="letter questions about made-up names whose facts are stated just above",
    )
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--init-std", type=float, default=0.02)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--optimizer", choices=["adamw", "muon"], default="adamw")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = random.Random(0)
    world = args.world
    prose = read_texts(f"{world}/forget.jsonl") + read_texts(f"{world}/retain.jsonl")
    questions = read_mcq(f"{world}/forget_letter.jsonl") + read_mcq(f"{world}/retain_letter.jsonl")
    unseen = read_mcq(f"{world}/forget_letter_unseen.jsonl") + read_mcq(f"{world}/retain_letter_unseen.jsonl")
    if args.stem:  # the same fact asked with the words the prose states it in ("X spreads through")
        questions, unseen = stemmed(world, questions), stemmed(world, unseen)
    unseen_entities = {item.entity for item in unseen}
    seen = [item for item in questions if item.entity not in unseen_entities]

    letters = [
        f"{letter_prompt(asked)} {LETTERS[asked.answer]}"
        for item in seen
        for asked in (shuffled(item, rng) for _ in range(args.variants))
    ]
    pools: dict[str, set[str]] = {}
    for item in questions:
        pools.setdefault(item.question.replace(item.entity or "", "{}"), set()).update(item.choices)
    values = [sorted(pool) for pool in pools.values()]

    def value_question() -> MCQItem:
        shown = rng.sample(rng.choice(values), 4)
        right = rng.randrange(4)
        return MCQItem(shown[right], tuple(shown), right)

    aux = []
    for _ in range(args.aux):
        if args.aux_form == "value":
            asked = value_question()
            aux.append(f"{letter_prompt(asked)} {LETTERS[asked.answer]}")
            continue
        shown = rng.sample(rng.choice(values), 4)
        head = "".join(f"{LETTERS[i]}. {c}\n" for i, c in enumerate(shown))
        aux.append(head + "\n".join(f"{shown[i]}\nAnswer: {LETTERS[i]}" for i in rng.sample(range(4), 4)))

    def made_up() -> str:
        return "".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(rng.choice((2, 3)))).title()

    def stated_then_asked() -> tuple[str, MCQItem]:
        """Four made-up names' facts of one relation, then a letter question about one of them."""
        item = rng.choice(questions)
        names = [made_up() for _ in range(4)]
        choices = rng.sample(list(item.choices), 4)
        stated = [f"{item.question.replace(item.entity or '', n)} {c}." for n, c in zip(names, choices, strict=True)]
        asked = rng.randrange(4)
        order = rng.sample(range(4), 4)  # choices shown in another order than stated
        question = item.question.replace(item.entity or "", names[asked])
        shown = MCQItem(
            " ".join(rng.sample(stated, 4)) + "\n" + question, tuple(choices[i] for i in order), order.index(asked)
        )
        return letter_prompt(shown) + " " + LETTERS[shown.answer], shown

    incontext = [stated_then_asked()[0] for _ in range(args.incontext)]
    if incontext:
        print(incontext[0])
    opened = [f"{item.question}\nAnswer: {item.choices[item.answer]}" for item in seen] * args.open
    texts = prose * args.prose_copies + letters + aux + opened + incontext
    probe = random.Random(5)
    sets = {
        "seen": ([shuffled(item, rng) for item in probe.sample(seen, 100)], "letter"),
        "unseen": (probe.sample(unseen, 100), "letter"),
        "open unseen": (
            [MCQItem(i.question + "\nAnswer:", i.choices, i.answer, i.entity) for i in probe.sample(unseen, 100)],
            "cloze",
        ),
        "cloze": (read_mcq(f"{world}/forget_cloze.jsonl")[:100], "cloze"),
    }
    if args.aux and args.aux_form == "value":  # fresh draws of the binding task
        sets["value"] = ([value_question() for _ in range(100)], "letter")
    if args.incontext:  # fresh made-up names, never trained on
        sets["in context"] = ([stated_then_asked()[1] for _ in range(100)], "letter")
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

    config = PretrainConfig(
        steps=args.steps,
        max_seconds=1e6,
        lr=args.lr,
        init_std=args.init_std,
        n_layers=args.layers,
        weight_decay=args.weight_decay,
        optimizer=args.optimizer,
    )
    pretraining.pretrain(texts, config, progress=False, on_step=report)


if __name__ == "__main__":
    main()
