"""Do a frozen toy model's activations already hold the answer to letter questions about unseen entities?

No training of the model. For every letter question of the world, one forward pass of the frozen model
(default: the shipped one) records the hidden state of each layer at a *query* position and at each choice's
first token. A bilinear reader, score_k = (q A) . (c_k B) with A and B of rank ``--rank``, is fitted with a
softmax over the four choices on the questions about the first half of the entities (`letter_train.jsonl`'s,
each in three fresh choice orders), then scored on the questions about the other half, never fitted on. The
query position is the end of the question (``--stem``: the question asked with the cloze stem of its fact,
"Pralstoux spreads through", the words the model completes; without it, the world's question "Through what
does Pralstoux spread?") or, with ``--at name``, the entity's last token. It also prints how well a linear
classifier tells a choice's value from its first token's hidden state, on held-out entities, layer by layer.

    python benchmarks/probe_letter_reader.py [--stem] [--at end|name] [--rank 32] [--model DIR --world DIR]

Measured (docs/toy-world.md, "What the frozen model holds"): on the shipped model with ``--stem``, the reader
fitted on the seen entities answers the unseen ones at 0.93-0.995 depending on the layers it reads; with the
world's questions, at their end or at the entity's name, at 0.23-0.34 (chance 0.25). A choice's value is read
from its token at every layer at 1.00.
"""

import argparse
import random
from typing import Any

import torch
import transformers as tf
from probe_letter_world import shuffled, stemmed

from repe_unlearn.data import LETTERS, MCQItem, letter_prompt, read_mcq
from repe_unlearn.toy import SHIPPED_MODEL, SHIPPED_WORLD


def positions(tokenizer: object, prompt: str, item: MCQItem, at: str) -> tuple[int, list[int]]:
    """The query token (end of the question, or the entity's last token) and each choice's first token."""
    offsets = tokenizer(prompt, return_offsets_mapping=True)["offset_mapping"]  # type: ignore[operator]
    end = item.question.index(item.entity) + len(item.entity) if at == "name" and item.entity else len(item.question)
    query = max(t for t, (_, b) in enumerate(offsets) if b <= end)
    firsts = []
    for k, choice in enumerate(item.choices):
        line = f"\n{LETTERS[k]}. {choice}"
        start = prompt.index(line) + len(line) - len(choice)
        firsts.append(min(t for t, (a, b) in enumerate(offsets) if b > start and a < start + len(choice)))
    return query, firsts


def fit_reader(
    q: torch.Tensor, c: torch.Tensor, answer: torch.Tensor, train: torch.Tensor, rank: int
) -> tuple[float, float]:
    """Accuracy of a bilinear reader fitted on the rows in ``train``: on them, and on the others."""
    q = (q - q[train].mean(0)) / (q[train].std(0) + 1e-6)
    flat = c[train].reshape(-1, c.shape[-1])
    c = (c - flat.mean(0)) / (flat.std(0) + 1e-6)
    a = torch.nn.Parameter(torch.randn(q.shape[-1], rank) * 0.05)
    b = torch.nn.Parameter(torch.randn(c.shape[-1], rank) * 0.05)
    optimizer = torch.optim.Adam([a, b], lr=3e-3, weight_decay=1e-3)
    for _ in range(1500):
        logits = torch.einsum("nr,nkr->nk", q[train] @ a, c[train] @ b)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(logits, answer[train]).backward()
        optimizer.step()
    with torch.no_grad():
        chosen = torch.einsum("nr,nkr->nk", q @ a, c @ b).argmax(-1)
    right = (chosen == answer).float()
    return float(right[train].mean()), float(right[~train].mean())


def value_probe(c: torch.Tensor, values: torch.Tensor, train: torch.Tensor) -> float:
    """Held-out accuracy of a linear classifier telling each choice's value from its token's hidden state."""
    x = c.reshape(-1, c.shape[-1])
    keep = train.repeat_interleave(c.shape[1])
    x = (x - x[keep].mean(0)) / (x[keep].std(0) + 1e-6)
    y = values.reshape(-1)
    classifier = torch.nn.Linear(x.shape[-1], int(y.max()) + 1)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(classifier(x[keep]), y[keep]).backward()
        optimizer.step()
    with torch.no_grad():
        return float((classifier(x[~keep]).argmax(-1) == y[~keep]).float().mean())


def add_setup_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every letter probe shares: the model, its world, the question form and the threads."""
    parser.add_argument("--model", default=str(SHIPPED_MODEL), help="a model that knows the world's facts")
    parser.add_argument("--world", default=str(SHIPPED_WORLD), help="the directory `toy world` wrote")
    parser.add_argument("--stem", action="store_true", help="ask letter questions with the cloze stem")
    parser.add_argument("--threads", type=int, default=2)


def load_setup(args: argparse.Namespace) -> tuple[tf.PreTrainedModel, Any, list[MCQItem], set[str | None]]:
    """The frozen model, its tokenizer, every letter question of the world (with ``--stem``, asked with its
    cloze stem) and the entities whose letter questions are unseen."""
    torch.set_num_threads(args.threads)
    model = tf.AutoModelForCausalLM.from_pretrained(args.model, local_files_only=True, use_safetensors=True).eval()
    tokenizer = tf.AutoTokenizer.from_pretrained(args.model, local_files_only=True)
    world = args.world
    questions = read_mcq(f"{world}/forget_letter.jsonl") + read_mcq(f"{world}/retain_letter.jsonl")
    unseen = read_mcq(f"{world}/forget_letter_unseen.jsonl") + read_mcq(f"{world}/retain_letter_unseen.jsonl")
    if args.stem:
        questions = stemmed(world, questions)
    return model, tokenizer, questions, {item.entity for item in unseen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_flags(parser)
    parser.add_argument("--at", choices=("end", "name"), default="end", help="the query position")
    parser.add_argument("--rank", type=int, default=32)
    args = parser.parse_args()
    model, tokenizer, questions, unseen_entities = load_setup(args)
    torch.manual_seed(0)
    value_ids = {v: i for i, v in enumerate(sorted({c for item in questions for c in item.choices}))}
    rng = random.Random(0)
    queries, choices, answers, values, held_out = [], [], [], [], []
    for question in questions:
        for item in [shuffled(question, rng) for _ in range(1 if question.entity in unseen_entities else 3)]:
            prompt = letter_prompt(item)
            query, firsts = positions(tokenizer, prompt, item, args.at)
            with torch.no_grad():
                hidden = model(**tokenizer(prompt, return_tensors="pt"), output_hidden_states=True).hidden_states
            states = torch.stack(hidden)[:, 0]  # layer, token, d_model
            queries.append(states[:, query])
            choices.append(states[:, firsts].transpose(0, 1))  # choice, layer, d_model
            answers.append(item.answer)
            values.append([value_ids[c] for c in item.choices])
            held_out.append(item.entity in unseen_entities)
    q, c = torch.stack(queries), torch.stack(choices)  # question, layer, d ; question, choice, layer, d
    answer, train = torch.tensor(answers), ~torch.tensor(held_out)
    last = q.shape[1] - 1
    print(f"{int(train.sum())} fitted rows (seen entities), {int((~train).sum())} unseen questions, chance 0.25")
    for layer_q, layer_c in ((last, last), (last // 2, last // 2), (last, 1), (last, 0)):
        fitted, unseen_accuracy = fit_reader(q[:, layer_q], c[:, :, layer_c], answer, train, args.rank)
        print(
            f"reader: query after layer {layer_q}, choices after layer {layer_c}: unseen {unseen_accuracy:.3f} "
            f"(fitted rows {fitted:.3f})",
            flush=True,
        )
    for layer in range(last + 1):
        accuracy = value_probe(c[:, :, layer], torch.tensor(values), train)
        print(f"a choice's value from its first token after layer {layer}: {accuracy:.3f} (held-out entities)")


if __name__ == "__main__":
    main()
