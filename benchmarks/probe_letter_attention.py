"""Do letter questions teach the composition when their loss may reach attention only, not the MLPs?

Trains the default toy architecture from scratch on the shipped world's prose mixed with answered letter
questions about the first half of the entities (``--letter-share`` of each batch, choices shuffled anew, loss on
the answer only). The prose's loss reaches every weight; with ``--letter-grad attention`` the letter questions'
loss reaches only the attention weights, the norms and the four letters' embedding rows (tied: the rows that
output " A" .. " D"), so that the MLPs, where the prose stores its facts, cannot store the trained questions'
answers as well; ``--letter-grad all`` lets it reach every weight except the embeddings (the baseline). Every
``--every`` steps it prints the letter accuracy on 100 trained ("seen") questions in fresh choice orders, on 100
about the other half ("unseen", never trained in letter form) and the cloze accuracy on 100 forget facts.
Letter questions are asked with the cloze stem of their fact unless ``--no-stem``.

    python benchmarks/probe_letter_attention.py [--letter-grad attention|all] [--steps 3000] [--layers 4]
        [--init-std 0.1] [--lr 1e-3] [--batch-size 32] [--letter-share 0.5] [--world DIR]

Measured (docs/toy-world.md, "Recall composed with binding"): with the letter loss on attention only, the
trained questions reach 0.99 by step 2250 and 1.00 from 2500 on (memorised by the attention weights), while
the unseen stay at chance (0.16-0.26 at every check; 0.25 at step 3000).
"""

import argparse
import importlib
import math
import random
import time

import torch
from probe_letter_world import shuffled, stemmed

from repe_unlearn.data import LETTERS, letter_prompt, read_mcq, read_texts, tokenize_batches
from repe_unlearn.evaluation import evaluate_mcq
from repe_unlearn.toy import SHIPPED_WORLD, PretrainConfig

pretraining = importlib.import_module("repe_unlearn.toy.pretrain")  # the module: the package exports the function


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--letter-grad", choices=["attention", "all"], default="attention")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--init-std", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--letter-share", type=float, default=0.5, help="the share of letter questions per batch")
    parser.add_argument("--no-stem", action="store_true", help="ask with the world's questions, not the cloze stem")
    parser.add_argument("--world", default=str(SHIPPED_WORLD))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = random.Random(0)
    world = args.world
    prose = read_texts(f"{world}/forget.jsonl") + read_texts(f"{world}/retain.jsonl")
    questions = read_mcq(f"{world}/forget_letter.jsonl") + read_mcq(f"{world}/retain_letter.jsonl")
    unseen = read_mcq(f"{world}/forget_letter_unseen.jsonl") + read_mcq(f"{world}/retain_letter_unseen.jsonl")
    if not args.no_stem:
        questions, unseen = stemmed(world, questions), stemmed(world, unseen)
    unseen_entities = {item.entity for item in unseen}
    seen = [item for item in questions if item.entity not in unseen_entities]
    probe = random.Random(5)
    sets = {"seen": [shuffled(item, rng) for item in probe.sample(seen, 100)], "unseen": probe.sample(unseen, 100)}
    cloze = read_mcq(f"{world}/forget_cloze.jsonl")[:100]

    # the tokenizer sees the letter format too (a few seen questions), as `toy pretrain` would
    tokenizer = pretraining.train_tokenizer(prose + [letter_prompt(q) + " A" for q in seen[:50]], 1024)
    model = pretraining.build_model(PretrainConfig(n_layers=args.layers, init_std=args.init_std), tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.98))
    named = dict(model.named_parameters())
    if args.letter_grad == "attention":
        reached = [p for n, p in named.items() if "self_attn" in n or "norm" in n]
    else:
        reached = [p for n, p in named.items() if "embed" not in n]
    embedding = model.model.embed_tokens.weight
    letter_rows = torch.zeros(embedding.shape[0], 1)
    letter_rows[[tokenizer(" " + letter)["input_ids"][-1] for letter in LETTERS[:4]]] = 1
    sentences = [pretraining._sentences(text) for text in prose]
    start = time.perf_counter()
    for step in range(args.steps):
        warm = min(1.0, (step + 1) / 100)
        optimizer.param_groups[0]["lr"] = args.lr * warm * (0.1 + 0.45 * (1 + math.cos(math.pi * step / args.steps)))
        documents = []
        for _ in range(args.batch_size):
            if rng.random() < args.letter_share:
                asked = shuffled(rng.choice(seen), rng)
                documents.append(f"{letter_prompt(asked)} {LETTERS[asked.answer]}")
            else:
                shown = list(rng.choice(sentences))
                rng.shuffle(shown)
                documents.append(" ".join(shown))
        batch = next(tokenize_batches(tokenizer, [d + tokenizer.eos_token for d in documents], len(documents)))
        text_labels, answer_labels = pretraining._labels(tokenizer, documents, batch)
        model.train()
        logits = model(**batch).logits
        text_loss = pretraining._loss(logits, [text_labels])
        answer_loss = pretraining._loss(logits, [answer_labels])
        # the answers' gradient, on the weights it may reach only
        answer_grads = torch.autograd.grad(answer_loss, [*reached, embedding], retain_graph=True, allow_unused=True)
        optimizer.zero_grad(set_to_none=False)
        text_loss.backward()
        for param, grad in zip([*reached, embedding], answer_grads, strict=True):
            if grad is not None:
                param.grad += grad * letter_rows if param is embedding else grad
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if (step + 1) % args.every == 0:
            model.eval()
            accuracy = {
                name: evaluate_mcq(model, tokenizer, items, format="letter", batch_size=64).accuracy
                for name, items in sets.items()
            }
            accuracy["cloze"] = evaluate_mcq(model, tokenizer, cloze, format="cloze", batch_size=64).accuracy
            print(
                f"step {step + 1}  {time.perf_counter() - start:.0f} s  prose loss {text_loss.item():.3f}  "
                f"answer loss {answer_loss.item():.3f}  " + "  ".join(f"{k} {v:.2f}" for k, v in accuracy.items()),
                flush=True,
            )


if __name__ == "__main__":
    main()
