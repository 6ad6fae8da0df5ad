"""Can new layers stacked on a frozen toy model read the facts it recalls and answer letter questions?

The model (default: the shipped one) already knows the world's facts from prose. Its weights are frozen and
``--layers`` new decoder layers are stacked on top (attention only unless ``--mlp``: without MLPs the new
layers have little room to store facts of their own, so they must read the fact the frozen model recalls).
The new layers, the final norm and an untied copy of the output embedding are trained on answered letter
questions about the first half of the entities (`letter_train.jsonl`'s entities; distractors kept, choices
shuffled anew in every document; loss on the answer letter only), mixed with ``--prose`` prose documents
per batch (loss on every token, so that the cloze answers stay). Every ``--every`` steps it prints the letter
accuracy on 100 trained ("seen") questions in fresh choice orders, on 100 questions about the other half
("unseen", never trained in letter form) and the cloze accuracy on 100 forget facts. ``--stem`` asks every
letter question with the cloze stem of its fact ("Pralstoux spreads through\\nA. ..."), the words the
frozen model completes; without it, with the world's questions ("Through what does Pralstoux spread?").

    python benchmarks/probe_letter_stacked.py --stem [--layers 3] [--steps 1500] [--lr 1e-3] [--mlp]
        [--at P] [--early N --early-at P] [--thaw-attention N] [--open N] [--aux N] [--mark N]
        [--model DIR --world DIR]
        [--save OUT]

``--at P`` inserts the new layers after the frozen model's P first layers instead of on top; ``--early N``
inserts N more after its ``--early-at`` first layers; ``--thaw-attention N`` trains the attention of its N
first layers as well. ``--open N`` adds N trained questions per batch answered in words (the right value
after "Answer:"), ``--aux N`` N binding questions (the question line is the right value itself); every check
also scores the unseen questions answered in words ("open unseen": whether the recall reaches "Answer:") and,
with ``--aux``, 100 fresh binding questions ("value"). ``--mark N`` adds N trained questions per batch with
" yes" or " no" (their last token) after every choice, the loss on those marks, and scores 50 seen and 50
unseen questions by the choice most marked right ("mark").

``--save OUT`` writes the stacked model and tokenizer, so that `repe-unlearn eval` can score it.
Measured (docs/toy-world.md, "New layers on a frozen model"): 1500 steps, the unseen entities at 0.47 (two-token
values 0.68-0.80, one-token values 0.08-0.32), the trained questions at 0.60, cloze 1.00.
"""

import argparse
import copy
import math
import random
import time
from pathlib import Path

import torch
import transformers as tf
from probe_letter_world import shuffled, stemmed

from repe_unlearn.data import LETTERS, MCQItem, letter_prompt, read_mcq, read_texts
from repe_unlearn.evaluation import evaluate_mcq
from repe_unlearn.toy import SHIPPED_MODEL, SHIPPED_WORLD


def stacked(
    base: tf.PreTrainedModel, inserts: dict[int, int], init_std: float, mlp: bool, thaw: tuple[str, ...] = ()
) -> tuple[tf.PreTrainedModel, list]:
    """``base`` with ``inserts[p]`` new decoder layers after its ``p`` first layers (``p`` = its depth: on top);
    returns the model and the parameters to train."""
    config = copy.deepcopy(base.config)
    frozen = config.num_hidden_layers
    added = sum(inserts.values())
    config.num_hidden_layers = frozen + added
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = list(config.layer_types) + [config.layer_types[-1]] * added
    config.tie_word_embeddings = False  # the letters' output rows must move without moving the inputs
    model = tf.LlamaForCausalLM(config)

    def shift(index: int) -> int:  # where frozen layer ``index`` lands: above every group inserted below it
        return index + sum(count for at, count in inserts.items() if at <= index)

    def moved(key: str) -> str:
        if key.startswith("model.layers."):
            index, rest = key.removeprefix("model.layers.").split(".", 1)
            return f"model.layers.{shift(int(index))}.{rest}"
        return key

    kept = {shift(i) for i in range(frozen)}
    new = tuple(f"model.layers.{i}." for i in range(frozen + added) if i not in kept)
    state = {moved(key): value for key, value in base.state_dict().items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith(new) or k == "lm_head.weight" for k in missing), (missing, unexpected)
    model.lm_head.weight.data.copy_(base.get_output_embeddings().weight.data)
    trained = []
    for name, parameter in model.named_parameters():
        if name.startswith(new) and parameter.dim() == 2:
            if "o_proj" in name or "down_proj" in name:
                torch.nn.init.zeros_(parameter)  # the stacked model starts as the frozen one
            else:
                torch.nn.init.normal_(parameter, std=init_std)
        if name.startswith(new) and ".mlp." in name and not mlp:
            parameter.data.zero_()
            parameter.requires_grad = False
            continue
        parameter.requires_grad = name.startswith((*new, *thaw, "model.norm.", "lm_head."))
        if parameter.requires_grad:
            trained.append(parameter)
    return model, trained


def count(text: str) -> int:
    """An argparse type: a whole number of documents, at least 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(SHIPPED_MODEL), help="a model that knows the world's facts")
    parser.add_argument("--world", default=str(SHIPPED_WORLD), help="the directory `toy world` wrote")
    parser.add_argument("--layers", type=int, default=3, help="new layers stacked on the frozen model")
    parser.add_argument("--at", type=int, help="insert the new layers after this many frozen ones (default: all)")
    parser.add_argument("--early", type=int, default=0, help="also insert this many new layers lower down")
    parser.add_argument(
        "--thaw-attention", type=int, default=0, help="also train the attention of the frozen model's N first layers"
    )
    parser.add_argument("--early-at", type=int, default=1, help="after this many frozen layers")
    parser.add_argument("--mlp", action="store_true", help="give the new layers MLPs (default: attention only)")
    parser.add_argument("--stem", action="store_true", help="ask letter questions with the cloze stem")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--prose", type=int, default=16, help="prose documents per batch")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--init-std", type=float, default=0.1)
    parser.add_argument("--every", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--open", type=count, default=0, help="trained questions answered in words (the value) per batch, besides"
    )
    parser.add_argument(
        "--aux", type=count, default=0, help="binding questions (the question line is the right value) per batch"
    )
    parser.add_argument(
        "--mark", type=count, default=0, help="trained questions per batch with a right/wrong mark after every choice"
    )
    parser.add_argument("--save", help="write the stacked model and tokenizer here")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    world = Path(args.world)
    base = tf.AutoModelForCausalLM.from_pretrained(args.model)
    tokenizer = tf.AutoTokenizer.from_pretrained(args.model)
    depth = base.config.num_hidden_layers
    inserts = {depth if args.at is None else args.at: args.layers}
    if args.early:
        inserts[args.early_at] = inserts.get(args.early_at, 0) + args.early
    thaw = tuple(f"model.layers.{i}.self_attn." for i in range(args.thaw_attention))  # below every insert
    assert args.thaw_attention <= min(inserts), "--thaw-attention reaches above an insert"
    model, trained = stacked(base, inserts, args.init_std, args.mlp, thaw)
    prose = read_texts(world / "forget.jsonl") + read_texts(world / "retain.jsonl")
    questions = read_mcq(world / "forget_letter.jsonl") + read_mcq(world / "retain_letter.jsonl")
    unseen = read_mcq(world / "forget_letter_unseen.jsonl") + read_mcq(world / "retain_letter_unseen.jsonl")
    if args.stem:
        questions, unseen = stemmed(str(world), questions), stemmed(str(world), unseen)
    unseen_entities = {item.entity for item in unseen}
    seen = [item for item in questions if item.entity not in unseen_entities]
    for flag in ("batch_size", "open", "mark"):  # each draws that many trained questions per step
        if getattr(args, flag) > len(seen):
            parser.error(f"--{flag.replace('_', '-')} {getattr(args, flag)} exceeds the {len(seen)} trained questions")

    pools: dict[str, set[str]] = {}  # each relation's values, from its questions' choices
    for item in questions + unseen:
        pools.setdefault(item.question.replace(item.entity or "", "{}"), set()).update(item.choices)
    values = [sorted(pool) for pool in pools.values()]

    def value_question() -> MCQItem:  # the binding task: which letter holds the value the question line names
        shown = rng.sample(rng.choice(values), 4)
        right = rng.randrange(4)
        return MCQItem(shown[right], tuple(shown), right)

    probe = random.Random(5)
    sets = {
        "seen": ([shuffled(item, rng) for item in probe.sample(seen, min(100, len(seen)))], "letter"),
        "unseen": (probe.sample(unseen, min(100, len(unseen))), "letter"),
        "cloze": (read_mcq(world / "forget_cloze.jsonl")[:100], "cloze"),
    }
    # the unseen letter questions answered in words: whether the recall reaches "Answer:"
    sets["open unseen"] = ([MCQItem(letter_prompt(i), i.choices, i.answer) for i in sets["unseen"][0]], "cloze")
    if args.aux:
        sets["value"] = ([value_question() for _ in range(100)], "letter")
    pad = tokenizer.pad_token_id

    def encoded(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = [tokenizer(text)["input_ids"] for text in texts]
        width = max(map(len, ids))
        x = torch.full((len(ids), width), pad)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, sequence in enumerate(ids):
            x[row, : len(sequence)] = torch.tensor(sequence)
            mask[row, : len(sequence)] = 1
        return x, mask

    def lm_loss(x: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=x, attention_mask=mask).logits[:, :-1]
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)

    def answer_length(answer: str) -> int:
        return len(tokenizer(" " + answer, add_special_tokens=False)["input_ids"])

    # --mark: the last token of " yes" / " no" (one token each, whatever the world's tokenizer) after every choice
    right, wrong = (tokenizer(" " + word, add_special_tokens=False)["input_ids"][-1] for word in ("yes", "no"))

    def marked(item: MCQItem, upto: int | None = None) -> tuple[list[int], list[int]]:
        """The question's tokens with each choice followed by its mark, and labels on the marks only; with
        ``upto``, only the choices before it marked, ending at choice ``upto``'s last token."""
        ids = list(tokenizer(item.question)["input_ids"])
        labels = [-100] * len(ids)
        for k, choice in enumerate(item.choices[: None if upto is None else upto + 1]):
            line = tokenizer(f"\n{LETTERS[k]}. {choice}", add_special_tokens=False)["input_ids"]
            ids, labels = ids + line, labels + [-100] * len(line)
            if k != upto:
                mark = right if k == item.answer else wrong
                ids, labels = [*ids, mark], [*labels, mark]
        return ids, labels

    @torch.no_grad()
    def mark_accuracy(items: list[MCQItem]) -> float:
        """How often the choice with the largest margin of the right mark over the wrong one is the answer (the
        marks before each choice given)."""
        hits = 0
        for item in items:
            margins = []
            for k in range(len(item.choices)):
                logits = model(input_ids=torch.tensor([marked(item, k)[0]])).logits[0, -1]
                margins.append(float(logits[right] - logits[wrong]))
            hits += max(range(len(margins)), key=margins.__getitem__) == item.answer
        return hits / len(items)

    optimizer = torch.optim.AdamW(trained, lr=args.lr, weight_decay=0.0)
    start = time.perf_counter()
    print(f"{sum(p.numel() for p in trained)} trained parameters; {len(seen)} seen, {len(unseen)} unseen questions")
    for step in range(args.steps):
        model.train()
        factor = min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in optimizer.param_groups:
            group["lr"] = args.lr * factor
        asked = [shuffled(item, rng) for item in rng.sample(seen, args.batch_size)]
        asked += [value_question() for _ in range(args.aux)]
        documents = [(letter_prompt(item), LETTERS[item.answer]) for item in asked]
        for item in rng.sample(seen, args.open):
            item = shuffled(item, rng)
            documents.append((letter_prompt(item), item.choices[item.answer]))
        x, mask = encoded([f"{prompt} {answer}" for prompt, answer in documents])
        labels = torch.full_like(x, -100)
        for row, (_, answer) in enumerate(documents):  # the answer's tokens only
            end, length = int(mask[row].sum()), answer_length(answer)
            labels[row, end - length : end] = x[row, end - length : end]
        loss = lm_loss(x, labels, mask)
        if args.mark:
            rows = [marked(shuffled(item, rng)) for item in rng.sample(seen, args.mark)]
            width = max(len(ids) for ids, _ in rows)
            x = torch.full((len(rows), width), pad)
            labels = torch.full((len(rows), width), -100)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for row, (ids, marks) in enumerate(rows):
                x[row, : len(ids)] = torch.tensor(ids)
                labels[row, : len(ids)] = torch.tensor(marks)
                mask[row, : len(ids)] = 1
            loss = loss + lm_loss(x, labels, mask)
        if args.prose:
            x, mask = encoded([text + tokenizer.eos_token for text in rng.sample(prose, args.prose)])
            loss = loss + lm_loss(x, x.masked_fill(mask == 0, -100), mask)
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
            if args.mark:  # on 50 questions of each: one pass per choice
                accuracy["mark seen"] = mark_accuracy(sets["seen"][0][:50])
                accuracy["mark unseen"] = mark_accuracy(sets["unseen"][0][:50])
            print(
                f"step {step + 1}  {time.perf_counter() - start:.0f} s  loss {loss.item():.3f}  "
                + "  ".join(f"{name} {value:.2f}" for name, value in accuracy.items()),
                flush=True,
            )
    if args.save:
        model.save_pretrained(args.save)
        tokenizer.save_pretrained(args.save)


if __name__ == "__main__":
    main()
