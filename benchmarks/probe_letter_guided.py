"""Do new layers on a frozen toy model answer letter questions once their heads are shown where to look?

`probe_letter_stacked.py` stacks attention-only layers on the frozen shipped model and trains them on answered
letter questions about half of the entities: they fit the trained questions only to ~0.6 and the unseen ones to
~0.47. `probe_letter_heads.py` found the match itself learnable (unseen 0.89-0.90) once the recall is at
"Answer:" and the four choices are located for the reading head; what a single layer does not find is *where*
to look. This probe keeps the stacked model a plain `LlamaForCausalLM` and adds to the letter loss a loss on
where chosen heads attend (cross-entropy of the head's attention against a target position), on the trained
questions only:

- first new layer, head 0: from each choice's first token to that choice's letter ("B" in "B. silt dust");
- first new layer, head 1: from the last token ("Answer:") to the question's last token (where the frozen
  model recalls the fact);
- second new layer, heads 0..``--match-heads``-1: from the last token to the right choice's first token
  (``--guide structure``: to the four choices' first tokens evenly, which needs no answer).

Nothing is guided at evaluation: the unseen entities' questions are scored by `evaluate_mcq` as lm-eval
scores WMDP. ``--guide none`` is the plain stacked recipe, the baseline the guidance must beat.

``--fresh F`` asks that share of the trained questions with three distractors drawn afresh from the relation's
values (those of the trained questions' choices), so that remembering which of a question's four fixed choices
was right does not answer it; ``--mlp`` gives the new layers MLPs; ``--thaw N`` trains the frozen model's N first
layers too; ``--identity W`` / ``--carry W`` add a logit-lens loss after the first new layer: each choice's first
token reads as itself / "Answer:" reads as the right value's first token.

    python benchmarks/probe_letter_guided.py --stem [--guide answer|structure|none] [--steps 1500]
        [--fresh 0.5] [--mlp] [--identity W] [--carry W] [--thaw N] [--weight 1.0] [--layers 2]
        [--match-heads 2] [--weight-decay WD] [--seed S] [--model DIR --world DIR] [--save OUT]

Measured (docs/toy-world.md, "Heads shown where to look"): on the shipped model, unguided 0.23 on the unseen
entities, guided 0.745, with ``--fresh 0.5 --mlp`` 0.92 and 0.925 (two seeds), with ``--fresh 1.0 --mlp
--identity 3 --carry 3`` 0.97; the latter on world C's 6-layer base trained like the shipped model 0.97, on world
A's 0.87, on world A's model of today's recipe (4 layers) 0.73.
"""

import argparse
import math
import random
import time
from pathlib import Path
from typing import Literal

import torch
import transformers as tf
from probe_letter_stacked import stacked
from probe_letter_world import shuffled, stemmed

from repe_unlearn.data import LETTERS, MCQItem, letter_prompt, read_mcq, read_texts
from repe_unlearn.evaluation import evaluate_mcq
from repe_unlearn.toy import SHIPPED_MODEL, SHIPPED_WORLD


def landmarks(tokenizer: tf.PreTrainedTokenizerBase, item: MCQItem) -> tuple[list[int], int, list[int], list[int]]:
    """The prompt's token ids, the question's last token, each choice's letter token and first token."""
    prompt = letter_prompt(item)
    encoding = tokenizer(prompt, return_offsets_mapping=True)
    owner = [-1] * len(prompt)
    for index, (start, end) in enumerate(encoding["offset_mapping"]):
        for char in range(start, end):
            owner[char] = index
    question = item.question.strip()
    cursor = len(question) + 1  # after the question's line break
    letters, firsts = [], []
    for choice in item.choices:
        letters.append(owner[cursor])
        firsts.append(owner[cursor + 2])  # the space before the choice's first word belongs to its first token
        cursor += 3 + len(choice) + 1
    assert prompt[cursor:] == "Answer:", prompt[cursor:]
    return list(encoding["input_ids"]), owner[len(question) - 1], letters, firsts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(SHIPPED_MODEL))
    parser.add_argument("--world", default=str(SHIPPED_WORLD))
    parser.add_argument("--stem", action="store_true", help="ask letter questions with the cloze stem")
    parser.add_argument("--layers", type=int, default=2, help="new attention-only layers on top (at least 2)")
    parser.add_argument("--guide", choices=("answer", "structure", "none"), default="answer")
    parser.add_argument("--match-heads", type=int, default=2, help="heads of the last new layer guided to the choice")
    parser.add_argument("--weight", type=float, default=1.0, help="weight of the attention loss")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--prose", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--init-std", type=float, default=0.1)
    parser.add_argument("--every", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--fresh", type=float, default=0.0, help="share of trained questions asked with fresh distractors"
    )
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--mlp", action="store_true", help="give the new layers MLPs")
    parser.add_argument("--thaw", type=int, default=0, help="also train the frozen model's N first layers")
    parser.add_argument(
        "--identity",
        type=float,
        default=0.0,
        help="weight of a loss that each choice's first token, after the first new layer, reads as itself",
    )
    parser.add_argument(
        "--carry",
        type=float,
        default=0.0,
        help="weight of a loss that 'Answer:', after the first new layer, reads as the right value's first token",
    )
    parser.add_argument("--save")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    world = Path(args.world)
    base = tf.AutoModelForCausalLM.from_pretrained(args.model)
    tokenizer = tf.AutoTokenizer.from_pretrained(args.model)
    depth = base.config.num_hidden_layers
    thaw = tuple(f"model.layers.{i}." for i in range(args.thaw))
    model, trained = stacked(base, {depth: args.layers}, args.init_std, mlp=args.mlp, thaw=thaw)
    model.set_attn_implementation("eager")  # attention weights with their gradient
    first, last = depth, depth + args.layers - 1
    prose = read_texts(world / "forget.jsonl") + read_texts(world / "retain.jsonl")
    questions = read_mcq(world / "forget_letter.jsonl") + read_mcq(world / "retain_letter.jsonl")
    unseen = read_mcq(world / "forget_letter_unseen.jsonl") + read_mcq(world / "retain_letter_unseen.jsonl")
    if args.stem:
        questions, unseen = stemmed(str(world), questions), stemmed(str(world), unseen)
    unseen_entities = {item.entity for item in unseen}
    seen = [item for item in questions if item.entity not in unseen_entities]
    pools: dict[str, set[str]] = {}  # each relation's values, from the trained questions' choices alone
    for item in seen:
        pools.setdefault(item.question.replace(item.entity or "", "{}"), set()).update(item.choices)
    pool = {key: sorted(values) for key, values in pools.items()}

    def drawn(item: MCQItem) -> MCQItem:
        """``item`` with three distractors drawn afresh from its relation's values, in a fresh order."""
        right = item.choices[item.answer]
        values = [v for v in pool[item.question.replace(item.entity or "", "{}")] if v != right]
        if len(values) < 3:  # a sentence form too rare to have drawn three other values
            return shuffled(item, rng)
        others = rng.sample(values, 3)
        return shuffled(MCQItem(item.question, (right, *others), 0, item.entity), rng)

    probe = random.Random(5)
    sets: dict[str, tuple[list[MCQItem], Literal["letter", "cloze"]]] = {
        "seen": ([shuffled(item, rng) for item in probe.sample(seen, min(100, len(seen)))], "letter"),
        "unseen": (probe.sample(unseen, min(200, len(unseen))), "letter"),
        "cloze": (read_mcq(world / "forget_cloze.jsonl")[:100], "cloze"),
    }
    pad = tokenizer.pad_token_id
    answer_id = [tokenizer(" " + letter, add_special_tokens=False)["input_ids"] for letter in LETTERS[:4]]

    optimizer = torch.optim.AdamW(trained, lr=args.lr, weight_decay=args.weight_decay)
    start = time.perf_counter()
    print(f"{sum(p.numel() for p in trained)} trained parameters; {len(seen)} seen, {len(unseen)} unseen questions")
    for step in range(args.steps):
        model.train()
        factor = min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in optimizer.param_groups:
            group["lr"] = args.lr * factor
        asked = [
            drawn(item) if rng.random() < args.fresh else shuffled(item, rng)
            for item in rng.sample(seen, args.batch_size)
        ]
        marks = [landmarks(tokenizer, item) for item in asked]
        width = max(len(ids) for ids, *_ in marks) + 2
        x = torch.full((len(asked), width), pad)
        mask = torch.zeros_like(x)
        labels = torch.full_like(x, -100)
        ends = []
        for row, (item, (ids, *_)) in enumerate(zip(asked, marks, strict=True)):
            full = ids + answer_id[item.answer]
            x[row, : len(full)] = torch.tensor(full)
            mask[row, : len(full)] = 1
            labels[row, len(ids) : len(full)] = torch.tensor(answer_id[item.answer])  # the letter's tokens only
            ends.append(len(ids) - 1)  # "Answer:"'s last token, which predicts the letter
        out = model(
            input_ids=x,
            attention_mask=mask,
            output_attentions=args.guide != "none",
            output_hidden_states=bool(args.identity or args.carry),
        )
        letter_loss = torch.nn.functional.cross_entropy(
            out.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100
        )
        loss = letter_loss
        guide_loss = torch.zeros(())
        if args.guide != "none":
            eps = 1e-6
            terms = []
            for row, (item, (_, stem_end, letters, firsts)) in enumerate(zip(asked, marks, strict=True)):
                bind = out.attentions[first][row, 0]  # (queries, keys)
                terms += [-torch.log(bind[f, k] + eps) for f, k in zip(firsts, letters, strict=True)]
                terms.append(-torch.log(out.attentions[first][row, 1, ends[row], stem_end] + eps))
                for head in range(args.match_heads):
                    weights = out.attentions[last][row, head, ends[row]]
                    if args.guide == "answer":
                        terms.append(-torch.log(weights[firsts[item.answer]] + eps))
                    else:
                        terms.append(-torch.log(weights[firsts].sum() + eps))
            guide_loss = torch.stack(terms).mean()
            loss = loss + args.weight * guide_loss
        if args.identity or args.carry:  # the logit lens after the first new layer
            lens = model.lm_head(model.model.norm(out.hidden_states[first + 1]))
            rows, cols, want, weights = [], [], [], []
            for row, (item, (ids, _, _, firsts)) in enumerate(zip(asked, marks, strict=True)):
                if args.identity:
                    rows += [row] * len(firsts)
                    cols += firsts
                    want += [ids[f] for f in firsts]
                    weights += [args.identity] * len(firsts)
                if args.carry:
                    rows.append(row)
                    cols.append(ends[row])
                    want.append(ids[firsts[item.answer]])
                    weights.append(args.carry)
            picked = lens[torch.tensor(rows), torch.tensor(cols)]
            losses = torch.nn.functional.cross_entropy(picked, torch.tensor(want), reduction="none")
            loss = loss + (losses * torch.tensor(weights)).sum() / len(asked)
        if args.prose:
            texts = [tokenizer(text + tokenizer.eos_token)["input_ids"] for text in rng.sample(prose, args.prose)]
            width = max(map(len, texts))
            x = torch.full((len(texts), width), pad)
            mask = torch.zeros_like(x)
            for row, sequence in enumerate(texts):
                x[row, : len(sequence)] = torch.tensor(sequence)
                mask[row, : len(sequence)] = 1
            labels = x.masked_fill(mask == 0, -100)
            prose_logits = model(input_ids=x, attention_mask=mask).logits[:, :-1]
            loss = loss + torch.nn.functional.cross_entropy(
                prose_logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100
            )
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        if (step + 1) % args.every == 0 or step + 1 == args.steps:
            model.eval()
            accuracy = {
                name: evaluate_mcq(model, tokenizer, items, format=form, batch_size=64).accuracy
                for name, (items, form) in sets.items()
            }
            print(
                f"step {step + 1}  {time.perf_counter() - start:.0f} s  letter loss {letter_loss.item():.3f}  "
                f"guide loss {guide_loss.item():.3f}  " + "  ".join(f"{k} {v:.3f}" for k, v in accuracy.items()),
                flush=True,
            )
    if args.save:
        model.save_pretrained(args.save)
        tokenizer.save_pretrained(args.save)


if __name__ == "__main__":
    main()
