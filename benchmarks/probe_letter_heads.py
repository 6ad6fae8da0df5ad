"""What stops an attention layer from reading a frozen toy model's recall into a letter answer?

`probe_letter_reader.py` shows that a bilinear reader of the stem's end and the choices' first tokens
answers unseen entities at 0.93-0.99, while attention layers stacked on the same frozen model stay near 0.47.
This probe puts one attention layer (RMSNorm, 4 heads, query/key/value/output projections, no rotary
embedding, trained from scratch) between the two, on the frozen model's last-layer states, and gives it help
a real model would have to learn for itself, so that what is left to learn is known:

- the recall is copied to the answer: the stem end's state is added to the state at "Answer:";
- the layer attends from "Answer:" only to the four choices' first tokens (``--over all``: to every token);
- each choice's first token carries its letter as a learned vector. ``clean``: the attention's values read
  that vector alone; ``mixed``: they read the token's state with the vector added, as a real layer would
  (the letter has to share the state with the choice's own content).

A linear head reads the letter from the attention's output at "Answer:". Fitted on the seen entities' letter
questions (``--orders`` choice orders each), scored on the other half's (never fitted), chance 0.25.

    python benchmarks/probe_letter_heads.py --stem [--over choices|all] [--steps 1000] [--model DIR --world DIR]

Measured on the shipped model (docs/toy-world.md, "What the frozen model holds"): attending to the choices,
clean values reach unseen 0.90 in 1000 steps, mixed ones 0.34 (fitted 0.50) in 1000 and 0.89 in 5000;
attending to every token, 0.24-0.29 in 5000 steps.
"""

import argparse
import math
import random

import torch
from probe_letter_reader import add_setup_flags, load_setup, positions
from probe_letter_world import shuffled

from repe_unlearn.data import letter_prompt


class Reader(torch.nn.Module):
    """One attention layer from the last position, then a linear head over the four letters."""

    def __init__(self, d: int, heads: int, values: str) -> None:
        super().__init__()
        self.heads, self.values = heads, values
        self.norm = torch.nn.RMSNorm(d)
        self.q, self.k, self.v, self.o = (torch.nn.Linear(d, d, bias=False) for _ in range(4))
        for w in (self.q, self.k, self.v):
            torch.nn.init.normal_(w.weight, std=0.02)
        torch.nn.init.zeros_(self.o.weight)
        self.letter = torch.nn.Parameter(torch.randn(4, d) * 0.5)  # a vector per letter, at its choice's token
        self.out_norm = torch.nn.RMSNorm(d)
        self.head = torch.nn.Linear(d, 4)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, marks: torch.Tensor) -> torch.Tensor:
        """``x``: states (n, t, d) with the recall added at the last position; ``allowed``: (n, t) the
        positions the last one attends to; ``marks``: (n, t, d) each choice's letter vector, zero elsewhere."""
        n, t, d = x.shape
        z = self.norm(x + marks)
        last = z[:, -1:]
        hd = d // self.heads
        q = self.q(last).view(n, 1, self.heads, hd).transpose(1, 2)
        k = self.k(z).view(n, t, self.heads, hd).transpose(1, 2)
        v = self.v(marks if self.values == "clean" else z).view(n, t, self.heads, hd).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        weights = scores.masked_fill(~allowed[:, None, None], float("-inf")).softmax(-1)
        out = self.o((weights @ v).transpose(1, 2).reshape(n, d))
        return self.head(self.out_norm(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_flags(parser)
    parser.add_argument("--over", choices=("choices", "all"), default="choices", help="what 'Answer:' attends to")
    parser.add_argument("--orders", type=int, default=8, help="choice orders of each fitted question")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    model, tokenizer, questions, unseen_entities = load_setup(args)
    rng = random.Random(0)
    rows = []  # (states (t, d), stem end, choices' first tokens, answer, unseen)
    captured: dict[str, torch.Tensor] = {}
    hook = model.model.layers[-1].register_forward_hook(
        lambda module, inputs, output: captured.__setitem__("x", output[0] if isinstance(output, tuple) else output)
    )
    for question in questions:
        for item in [shuffled(question, rng) for _ in range(1 if question.entity in unseen_entities else args.orders)]:
            prompt = letter_prompt(item)
            query, firsts = positions(tokenizer, prompt, item, "end")
            with torch.no_grad():
                model(**tokenizer(prompt, return_tensors="pt"))
            rows.append((captured["x"][0], query, firsts, item.answer, item.entity in unseen_entities))
    hook.remove()
    n, t, d = len(rows), max(len(r[0]) for r in rows), rows[0][0].shape[-1]
    # left-padded, so that "Answer:" is the last position of every row
    x, allowed, where = torch.zeros(n, t, d), torch.zeros(n, t, dtype=torch.bool), torch.zeros(n, 4, dtype=torch.long)
    for i, (states, query, firsts, _, _) in enumerate(rows):
        pad = t - len(states)
        x[i, pad:] = states
        x[i, -1] += states[query]  # the recall, copied to "Answer:"
        where[i] = torch.tensor(firsts) + pad
        if args.over == "all":
            allowed[i, pad:] = True
        else:
            allowed[i, where[i]] = True
    answer = torch.tensor([r[3] for r in rows])
    held_out = torch.tensor([r[4] for r in rows])
    fitted, scored = torch.nonzero(~held_out).squeeze(1), torch.nonzero(held_out).squeeze(1)
    print(f"{len(fitted)} fitted rows (seen entities), {len(scored)} unseen questions, chance 0.25", flush=True)
    for values in ("clean", "mixed"):
        torch.manual_seed(0)
        reader = Reader(d, 4, values)

        def marks(rows_: torch.Tensor, reader: Reader = reader) -> torch.Tensor:
            out = torch.zeros(len(rows_), t, d)
            out[torch.arange(len(rows_))[:, None], where[rows_]] = reader.letter[None].expand(len(rows_), 4, d)
            return out

        def accuracy(rows_: torch.Tensor, reader: Reader = reader) -> float:
            with torch.no_grad():
                chosen = reader(x[rows_], allowed[rows_], marks(rows_)).argmax(-1)
            return float((chosen == answer[rows_]).float().mean())

        optimizer = torch.optim.AdamW(reader.parameters(), lr=args.lr, weight_decay=0.0)
        for step in range(args.steps):
            for group in optimizer.param_groups:  # warm-up, then one cosine cycle
                group["lr"] = args.lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
            batch = fitted[torch.randint(len(fitted), (64,))]
            loss = torch.nn.functional.cross_entropy(reader(x[batch], allowed[batch], marks(batch)), answer[batch])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(reader.parameters(), 1.0)
            optimizer.step()
        print(
            f"values {values}, attending to {args.over}: unseen {accuracy(scored):.3f} "
            f"(fitted questions {accuracy(fitted):.3f}) after {args.steps} steps",
            flush=True,
        )


if __name__ == "__main__":
    main()
