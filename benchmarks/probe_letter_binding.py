"""Can a toy-sized model learn to bind a letter to a choice? The obstacle to letter-format toy models (issue 17).

Trains the default toy architecture from scratch on one binding task built from the shipped world's values
(distractors drawn afresh and choices shuffled in every document, loss on the answer letters only) and
prints the running accuracy on the letters every 50 steps:

- ``value``: the question is the right value itself ("silt dust\\nA. ...\\nD. ...\\nAnswer: B"): pure matching;
- ``lookup``: four choices, then every value asked in turn ("glass bells\\nAnswer: A"); eliminating the
  letters already answered gives 0.52 without any matching.

    python benchmarks/probe_letter_binding.py --task lookup --steps 4000 [--layers 6] [--lr 1e-3] [--init-std 0.1]

Measured (docs/toy-world.md): value 0.25 after 600 steps, but 1.00 at 500 with --init-std 0.1; lookup 0.52
for about 2500 steps, 0.71 at 3850.
"""

import argparse
import random
import time

import torch
import transformers as tf

from repe_unlearn.data import LETTERS, MCQItem, letter_prompt, read_mcq, read_texts
from repe_unlearn.toy import SHIPPED_WORLD
from repe_unlearn.toy.pretrain import train_tokenizer


def scratch_model(
    tokenizer: tf.PreTrainedTokenizerFast, layers: int, init_std: float, lr: float
) -> tuple[tf.LlamaForCausalLM, torch.optim.AdamW]:
    """The default toy architecture (d_model 128, 4 heads, MLP 512, tied embeddings) from scratch, and its AdamW
    (β₂ 0.98, no weight decay), as the letter probes train it."""
    config = tf.LlamaConfig(
        hidden_size=128, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
        intermediate_size=512, vocab_size=len(tokenizer), max_position_embeddings=512, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, initializer_range=init_std,
    )  # fmt: skip
    model = tf.LlamaForCausalLM(config)
    return model, torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("value", "lookup"), default="lookup")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--init-std", type=float, default=0.02, help="spread of the initial weights")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    rows = [item for name in ("forget_letter", "retain_letter") for item in read_mcq(SHIPPED_WORLD / f"{name}.jsonl")]
    by_question: dict[str, list[str]] = {}
    for item in rows:
        key = item.question.replace(item.entity or "", "{}")  # one question per relation: its values
        by_question.setdefault(key, []).extend(item.choices)
    pools = [sorted(set(v)) for v in by_question.values()]

    def choices() -> tuple[str, list[str]]:
        pool = rng.choice(pools)
        picked = rng.sample(pool, 4)
        return picked[0], rng.sample(picked, 4)

    def document() -> tuple[list[str], list[str]]:
        """Text segments, each followed by the letter that answers it."""
        right, shown = choices()
        if args.task == "value":
            answer = shown.index(right)
            return [letter_prompt(MCQItem(right, tuple(shown), answer))], [" " + LETTERS[answer]]
        head = "".join(f"{LETTERS[i]}. {c}\n" for i, c in enumerate(shown))
        asked = rng.sample(range(4), 4)
        segments = [head + f"{shown[asked[0]]}\nAnswer:"] + [f"\n{shown[i]}\nAnswer:" for i in asked[1:]]
        return segments, [" " + LETTERS[i] for i in asked]

    prose = read_texts(SHIPPED_WORLD / "forget.jsonl") + read_texts(SHIPPED_WORLD / "retain.jsonl")
    tokenizer = train_tokenizer(
        prose + ["".join(s + a for s, a in zip(*document(), strict=True)) for _ in range(3000)], 1024
    )
    letter_ids = [tokenizer.convert_tokens_to_ids("Ġ" + letter) for letter in "ABCD"]
    model, optimizer = scratch_model(tokenizer, args.layers, args.init_std, args.lr)
    correct: list[float] = []
    start = time.perf_counter()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / 30)
        encoded = []
        for segments, answers in (document() for _ in range(args.batch_size)):
            ids: list[int] = []
            labels: list[int] = []
            for segment, answer in zip(segments, answers, strict=True):
                text_ids = tokenizer(segment)["input_ids"]
                answer_ids = tokenizer(answer)["input_ids"]
                assert len(answer_ids) == 1, "the answer letters are single tokens"
                ids += text_ids + answer_ids
                labels += [-100] * len(text_ids) + answer_ids
            encoded.append((ids, labels))
        length = max(len(ids) for ids, _ in encoded)
        input_ids = torch.full((len(encoded), length), tokenizer.pad_token_id)
        label_ids = torch.full_like(input_ids, -100)
        mask = torch.zeros_like(input_ids)
        for i, (ids, labels) in enumerate(encoded):
            input_ids[i, : len(ids)], label_ids[i, : len(ids)], mask[i, : len(ids)] = (
                torch.tensor(ids), torch.tensor(labels), 1,
            )  # fmt: skip
        model.train()
        out = model(input_ids=input_ids, attention_mask=mask, labels=label_ids)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            rows_, cols = torch.nonzero(label_ids[:, 1:] != -100, as_tuple=True)
            predicted = out.logits[rows_, cols][:, letter_ids].argmax(-1)
            gold = torch.tensor([letter_ids.index(int(t)) for t in label_ids[rows_, cols + 1]])
            correct += (predicted == gold).float().tolist()
        if (step + 1) % 50 == 0:
            recent = correct[-50 * args.batch_size :]
            print(
                f"step {step + 1}  {time.perf_counter() - start:.0f} s  loss {out.loss.item():.3f}  "
                f"letter accuracy (last 50 steps) {sum(recent) / len(recent):.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
