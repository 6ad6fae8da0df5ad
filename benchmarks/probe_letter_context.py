"""Can a toy-sized model compose recall with letter binding when the fact is in the prompt? (issue 17)

The composition a letter-format toy model needs, without the memory: every document states one relation's fact
about four made-up names (fresh names each time, so nothing can be memorised), then asks about one of them
with the relation's cloze stem as a letter question. All four choices appear in the facts, so picking the
choice already seen in the prompt does not answer it; only recalling, at the stem's end, the value stated for
that name does. With ``--cloze F`` a fraction F of the documents asks in words instead ("...\\nDarbilam
infects" → " reed voles."), training that recall (induction over the prompt) on its own. Loss on the answer
only; the default toy architecture from scratch; every 50 steps, the running accuracy of the letters (and of
the first token of the worded answers) on the documents just trained on, each seen once.

    python benchmarks/probe_letter_context.py [--steps 1500] [--cloze 0.5] [--layers 4] [--init-std 0.1]

Measured (docs/toy-world.md): letters 0.25 after 1500 steps; with --cloze 0.5 the letters 0.26 and the worded
recall 0.25 (one of the four stated values at random), the same at 4000 steps: induction over made-up names does
not form in that budget.
"""

import argparse
import random
import time

import torch
from probe_letter_binding import scratch_model

from repe_unlearn.data import LETTERS, MCQItem, letter_prompt, read_mcq, read_texts
from repe_unlearn.toy import SHIPPED_WORLD
from repe_unlearn.toy.pretrain import train_tokenizer

CONSONANTS, VOWELS = "bdfgklmnprstvz", "aeiou"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--init-std", type=float, default=0.1, help="spread of the initial weights")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--cloze", type=float, default=0.0, help="fraction of documents asked in words")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    items = [item for name in ("forget_cloze", "retain_cloze") for item in read_mcq(SHIPPED_WORLD / f"{name}.jsonl")]
    values: dict[str, set[str]] = {}
    for item in items:  # one stem per relation ("{} infects"): its values
        values.setdefault(item.question.replace(item.entity or "", "{}"), set()).update(item.choices)
    pools = {stem: sorted(found) for stem, found in values.items()}
    stems = sorted(pools)

    def made_up_name() -> str:
        syllables = rng.randint(2, 3)
        return "".join(
            rng.choice(CONSONANTS) + rng.choice(VOWELS) + (rng.choice(CONSONANTS) if rng.random() < 0.5 else "")
            for _ in range(syllables)
        ).capitalize()

    def document() -> tuple[str, str]:
        """A prompt and its answer: a letter, or the value in words."""
        stem = rng.choice(stems)
        stated = rng.sample(pools[stem], 4)
        names = [made_up_name() for _ in stated]
        facts = [f"{stem.format(name)} {value}." for name, value in zip(names, stated, strict=True)]
        rng.shuffle(facts)
        context = " ".join(facts) + "\n"
        if rng.random() < args.cloze:
            return context + stem.format(names[0]), f" {stated[0]}."
        shown = rng.sample(stated, 4)
        answer = shown.index(stated[0])
        return context + letter_prompt(MCQItem(stem.format(names[0]), tuple(shown), answer)), " " + LETTERS[answer]

    prose = read_texts(SHIPPED_WORLD / "forget.jsonl") + read_texts(SHIPPED_WORLD / "retain.jsonl")
    tokenizer = train_tokenizer(prose + ["".join(document()) for _ in range(3000)], 1024)
    letter_ids = [tokenizer.convert_tokens_to_ids("Ġ" + letter) for letter in "ABCD"]
    print("".join(document()))
    model, optimizer = scratch_model(tokenizer, args.layers, args.init_std, args.lr)
    letters: list[float] = []
    worded: list[float] = []
    start = time.perf_counter()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / 30)
        encoded = []
        for prompt, answer in (document() for _ in range(args.batch_size)):
            prompt_ids, answer_ids = tokenizer(prompt)["input_ids"], tokenizer(answer)["input_ids"]
            encoded.append((prompt_ids + answer_ids, len(prompt_ids)))
        length = max(len(ids) for ids, _ in encoded)
        input_ids = torch.full((len(encoded), length), tokenizer.pad_token_id)
        labels = torch.full_like(input_ids, -100)
        mask = torch.zeros_like(input_ids)
        for row, (ids, cut) in enumerate(encoded):
            input_ids[row, : len(ids)], mask[row, : len(ids)] = torch.tensor(ids), 1
            labels[row, cut : len(ids)] = torch.tensor(ids[cut:])
        model.train()
        out = model(input_ids=input_ids, attention_mask=mask, labels=labels)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            for row, (ids, cut) in enumerate(encoded):  # the first answer token, predicted at the prompt's end
                logits, first = out.logits[row, cut - 1], ids[cut]
                if first in letter_ids:
                    letters.append(float(letter_ids[int(logits[letter_ids].argmax())] == first))
                else:
                    worded.append(float(int(logits.argmax()) == first))
        if (step + 1) % 50 == 0:
            recent, recent_words = letters[-50 * args.batch_size :], worded[-50 * args.batch_size :]
            words = f"  worded {sum(recent_words) / len(recent_words):.2f}" if recent_words else ""
            print(
                f"step {step + 1}  {time.perf_counter() - start:.0f} s  loss {out.loss.item():.3f}  "
                f"letters (last 50 steps) {sum(recent) / max(1, len(recent)):.2f}{words}",
                flush=True,
            )


if __name__ == "__main__":
    main()
