"""Train a tokenizer and a small Llama-architecture causal LM from scratch on any corpora.

Used to make the toy model the package ships; works on any list of documents. Each step takes the next
documents of a shuffled epoch and shuffles the sentences within each, so that every fact is learned wherever
it stands in its paragraph; the loss is the LM loss over the non-pad tokens of plain documents, plus that over
the answers of answered questions (see `answer_start`), each a mean of its own. Training runs until
the facts are known (see :func:`pretrain`), under a learning-rate schedule that suits any length (`schedule`).
"""

import math
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import torch
import transformers as tf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm

from ..data import MCQItem, tokenize_batches
from ..errors import DataError, TrainingError
from .config import PretrainConfig
from .muon import Muon
from .schedule import NEAR, Schedule

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")
QUICK_CHECK = 48  # questions per set in the glance taken before a whole check
QUICK_MARGIN = NEAR  # a glance this far below the target skips the whole check


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> tf.PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts`` (no special tokens are added when encoding)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def answers_missing(texts: Sequence[str], items: Sequence[MCQItem]) -> list[MCQItem]:
    """Items whose right answer appears nowhere in ``texts``: no training on them can teach it."""
    corpus = "\n".join(texts).lower()
    return [item for item in items if item.choices[item.answer].strip().lower() not in corpus]


def answers_unstated(texts: Sequence[str], items: Sequence[MCQItem], budget: int = 20_000_000) -> list[MCQItem]:
    """Items about an entity whose right answer appears in no document that names that entity: what the corpus
    says of the entity cannot teach it (a wrong answer key, say). Items without an entity are not judged, nor any
    when the search would read more than ``budget`` characters (a large corpus)."""
    entities = {item.entity.lower() for item in items if item.entity}
    lowered = [t.lower() for t in texts]
    if not entities or len(entities) * sum(map(len, lowered)) > budget:
        return []
    naming = {entity: [t for t in lowered if entity in t] for entity in entities}
    return [
        item
        for item in items
        if item.entity and not any(item.choices[item.answer].strip().lower() in t for t in naming[item.entity.lower()])
    ]


def check_corpus(texts: Sequence[str], eval_items: Mapping[str, Sequence[MCQItem]], target: float) -> list[str]:
    """Refuse what cannot be learned (one line each); return warnings about what is suspect."""
    if not texts:
        raise DataError("no text to pretrain on: the corpus is empty")
    warnings: list[str] = []
    if len(texts) == 1:
        warnings.append("the corpus is one document: the model will learn that text by heart, nothing more")
    words = re.findall(r"\w+", " ".join(texts).lower())
    counts = Counter(words)
    if len(words) >= 50 and sum(1 for w in words if counts[w] == 1) > 0.8 * len(words):
        warnings.append(
            f"{sum(1 for c in counts.values() if c == 1)} of {len(counts)} distinct words occur once: the corpus "
            "has little repeated structure to learn, expect a loss plateau rather than known facts"
        )
    for token in SPECIAL_TOKENS:
        holding = [i for i, text in enumerate(texts) if token in text]
        if holding:
            warnings.append(
                f"{len(holding)} document(s) contain the text {token!r} (first: document {holding[0] + 1}), which the "
                "tokenizer reads as its special token, not as text"
            )
    corpus_words = set(words)
    for name, items in eval_items.items():
        if not items:
            raise DataError(f"--eval-mcq {name}: no questions")
        entities = sorted({item.entity for item in items if item.entity})
        absent = [e for e in entities if not set(re.findall(r"\w+", e.lower())) <= corpus_words]
        if absent and len(absent) / len(entities) > 1 - target:
            raise DataError(
                f"--eval-mcq {name}: {len(absent)} of {len(entities)} entities the questions are about never "
                f"appear in the corpus (first: {absent[0]!r}), so accuracy {target} cannot be reached; check the "
                "files belong together"
            )
        missing = answers_missing(texts, items)
        if missing and len(missing) / len(items) > 1 - target:
            raise DataError(
                f"--eval-mcq {name}: {len(missing)} of {len(items)} right answers never appear in the corpus "
                f"(first: {missing[0].choices[missing[0].answer]!r}), so accuracy {target} cannot be reached; "
                "check the files belong together, or lower --target"
            )
        if missing:
            warnings.append(f"--eval-mcq {name}: {len(missing)} right answers never appear in the corpus")
            continue
        unstated = answers_unstated(texts, items)
        if unstated and len(unstated) / len(items) > 1 - target:
            first = unstated[0]
            raise DataError(
                f"--eval-mcq {name}: {len(unstated)} of {len(items)} right answers never appear in a document that "
                f"names their entity (first: {first.entity!r}, answer {first.choices[first.answer]!r}), so accuracy "
                f"{target} cannot be reached; check the answer key, or lower --target"
            )
        if unstated:
            warnings.append(
                f"--eval-mcq {name}: {len(unstated)} right answers never appear in a document that names their entity"
            )
    return warnings


def _is_prose(text: str) -> bool:
    return "\n" not in text.strip()


_ANSWERED = re.compile(r"\nAnswer:(?=[ \t]*\S[^\n]*$)")  # a question's last line: "Answer: <completion>"


def answer_start(text: str) -> int | None:
    """Where the completion of an answered question (several lines, the last "Answer: X") begins, else None."""
    found = list(_ANSWERED.finditer(text.rstrip()))
    return found[-1].end() if found and not _is_prose(text) else None


def _answered_within(
    tokenizer: tf.PreTrainedTokenizerFast, texts: Sequence[str], max_length: int
) -> tuple[list[str], int]:
    """``texts`` with answered questions stripped of trailing blanks (their answer ends at the end-of-text
    token) and without those whose answer starts beyond ``max_length`` tokens; and how many were left out."""
    kept, cut = [], 0
    for text in texts:
        start = answer_start(text)
        if start is None:
            kept.append(text)
        elif len(tokenizer(text[:start])["input_ids"]) < max_length:
            kept.append(text.rstrip())
        else:
            cut += 1
    return kept, cut


def _labels(
    tokenizer: tf.PreTrainedTokenizerFast, texts: Sequence[str], batch: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token targets split in two: every token of plain documents, and only the completion of answered
    questions (`answer_start`; with the end-of-text token that follows it in ``batch``), so that a question's one
    answer token is not drowned by the text around it. ``texts`` are the documents without that token."""
    ids = batch["input_ids"]
    text_labels = ids.masked_fill(batch["attention_mask"] == 0, -100)
    answer_labels = torch.full_like(ids, -100)
    for row, text in enumerate(texts):
        cut = answer_start(text)
        if cut is None:
            continue
        prompt = len(tokenizer(text[:cut])["input_ids"])
        answer_labels[row, prompt:] = text_labels[row, prompt:]
        text_labels[row] = -100
    return text_labels, answer_labels


def _loss(
    logits: torch.Tensor, label_sets: Sequence[torch.Tensor], counts: Sequence[int] | None = None
) -> torch.Tensor:
    """The mean next-token loss of each label set that has targets in this batch, summed. With ``counts`` (the
    targets of each set in the whole step's batch), each set's summed loss over this part of the batch is divided
    by its count instead, so that the parts of a batch add up to the whole batch's loss."""
    flat = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    total = flat[:0].sum()  # zero, on the graph even if no set has targets
    for i, labels in enumerate(label_sets):
        targets = labels[:, 1:].reshape(-1)
        if not bool((targets != -100).any()):
            continue
        if counts is None:
            total = total + torch.nn.functional.cross_entropy(flat, targets, ignore_index=-100)
        else:
            summed = torch.nn.functional.cross_entropy(flat, targets, ignore_index=-100, reduction="sum")
            total = total + summed / counts[i]
    return total


def _targets(labels: torch.Tensor) -> int:
    """How many next-token targets ``labels`` holds (the first position has none)."""
    return int((labels[:, 1:] != -100).sum())


PASS_COST = 150  # a forward and backward pass costs about as much as this many more tokens (2 CPU cores)


def micro_batches(lengths: Sequence[int], pass_cost: int = PASS_COST) -> list[list[int]]:
    """The rows of a padded batch split into groups of similar length, each run as its own pass, that cost the
    least padded tokens: a group costs its rows times its longest row, plus ``pass_cost`` for the pass. One
    group when padding wastes less than a pass costs (documents of like lengths); long and short documents apart
    when it wastes more. The groups' gradients add up to the whole batch's (see `_loss`)."""
    order = sorted(range(len(lengths)), key=lambda row: lengths[row])
    # a group ends where the length changes (rows of one length cost nothing more together): the cuts to weigh
    # are as many as the distinct lengths, at most max_length, whatever the batch size
    ends = [j for j in range(1, len(order) + 1) if j == len(order) or lengths[order[j]] != lengths[order[j - 1]]]
    best = {0: 0.0}  # best[j]: the cheapest split of the j shortest rows, for each end j (and 0)
    cut = {0: 0}
    for j in ends:
        best[j] = math.inf
        for i in (0, *ends):
            if i >= j:
                break
            cost = best[i] + (j - i) * lengths[order[j - 1]] + pass_cost
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], len(order)
    while j:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def build_model(config: PretrainConfig, tokenizer: tf.PreTrainedTokenizerFast) -> tf.LlamaForCausalLM:
    """The toy Llama of ``config``'s size for ``tokenizer``, freshly initialised (tied embeddings)."""
    return tf.LlamaForCausalLM(
        tf.LlamaConfig(
            hidden_size=config.d_model,
            num_hidden_layers=config.n_layers,
            num_attention_heads=config.n_heads,
            num_key_value_heads=config.n_heads,
            intermediate_size=config.d_mlp,
            vocab_size=len(tokenizer),
            max_position_embeddings=max(256, config.max_length),
            tie_word_embeddings=True,
            initializer_range=config.init_std,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )


class _Optimizers:
    """Several torch optimizers stepped as one; ``param_groups`` lists all their groups (the schedule sets each
    group's ``lr``)."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers
        self.param_groups = [group for optimizer in optimizers for group in optimizer.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()


def build_optimizer(config: PretrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer | _Optimizers:
    """AdamW on every weight, or (``config.optimizer == "muon"``) Muon (`muon`) on the decoder layers' matrices,
    its update scaled to AdamW's RMS so that ``config.lr`` means the same for both, and AdamW on the embeddings
    and norms. Each group's ``lr`` is set by the schedule at every step."""
    adamw = {"lr": config.lr, "weight_decay": config.weight_decay, "betas": (0.9, 0.98)}
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), **adamw)  # type: ignore[arg-type]
    matrices: list[torch.nn.Parameter] = []
    rest: list[torch.nn.Parameter] = []
    for name, parameter in model.named_parameters():  # a decoder layer's matrix, or anything else
        (matrices if parameter.ndim == 2 and ".layers." in f".{name}" else rest).append(parameter)
    return _Optimizers(
        Muon(matrices, lr=config.lr, weight_decay=config.weight_decay),
        torch.optim.AdamW(rest, **adamw),  # type: ignore[arg-type]
    )


def pretrain(
    texts: Sequence[str],
    config: PretrainConfig | None = None,
    *,
    eval_items: Mapping[str, Sequence[MCQItem]] | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[tf.LlamaForCausalLM, tf.PreTrainedTokenizerFast, list[float]]:
    """Train tokenizer and model on ``texts``; returns (model in eval mode, tokenizer, loss per step).

    Until learned (``config.steps`` unset): every ``eval_every`` steps the cloze accuracy of each set of
    ``eval_items`` (up to 200 questions each) is checked, and training stops once all reach ``target``, or when
    a round of the learning rate (the peak, its decay and any hold after it; see `schedule`) ends less than
    0.01 above the previous one's accuracy; without items the decay starts when the loss stops falling, and
    training stops when a decay ends less than 2% (or 0.01) below the previous one's loss. Either way it stops
    at ``max_steps`` or ``max_seconds``. A check first glances at ``QUICK_CHECK`` questions of each set and
    scores the whole sets only when the glance is within ``QUICK_MARGIN`` of the target (or a decay or hold
    ends). How it stopped is in ``model.config.repe_unlearn_pretrain`` ("stopped": target, plateau, steps or
    ceiling; with the accuracies of the model returned, on the whole sets).

    One-line documents have their sentences shuffled at each visit (each fact is learned wherever it stands);
    documents with line breaks (letter-format questions with their answer) are kept in order.
    """
    from ..evaluation import evaluate_mcq

    config = config or PretrainConfig()
    texts = [t for t in texts if t.strip()]
    eval_items = dict(eval_items or {})
    warnings = check_corpus(texts, eval_items, config.target)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    checks = {name: rng.sample(list(items), min(200, len(items))) for name, items in eval_items.items()}
    # accuracy "gained" when it rose 0.01, or two more questions of the smallest checked set
    step_of_two = max([0.01, *(2 / len(items) for items in checks.values())])
    tokenizer = train_tokenizer(texts, config.vocab_size)
    model = build_model(config, tokenizer)
    optimizer = build_optimizer(config, model)
    texts, cut = _answered_within(tokenizer, texts, config.max_length)
    if not texts:
        raise DataError(
            f"every document is an answered question whose answer lies beyond --max-length {config.max_length} "
            "tokens; raise --max-length"
        )
    if cut:
        warnings.append(
            f"{cut} answered question(s) have their answer start beyond --max-length {config.max_length} tokens, so "
            "the answer (the only part of a question that is trained) would be cut off; they are left out (raise "
            "--max-length)"
        )
        print(f"warning: {warnings[-1]}", file=sys.stderr)
    documents = [_sentences(t) if _is_prose(t) else [t] for t in texts]
    order: list[int] = []
    eos = tokenizer.eos_token
    losses: list[float] = []
    accuracy: dict[str, float] = {}
    ceiling = config.steps if config.steps is not None else config.max_steps
    stopped = "steps" if config.steps is not None else "ceiling"
    # a round: the peak rate, its decay and any hold after it (see `Schedule.round_ends`)
    round_losses: list[float] = []  # the mean loss over the last check window of each finished round
    round_accuracy: list[float] = []  # the lowest set's accuracy at the end of each finished round
    checked_at = -1  # the step of the last check on the whole sets
    schedule = Schedule(config)

    def check(sets: Mapping[str, Sequence[MCQItem]]) -> dict[str, float]:
        model.eval()
        return {
            name: evaluate_mcq(model, tokenizer, items, format="cloze", batch_size=64).accuracy
            for name, items in sets.items()
        }

    bar = tqdm(total=ceiling, desc="pretrain", disable=not progress, unit="step")
    start, checking = time.perf_counter(), 0.0
    for step in range(ceiling):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * schedule.factor(step)
        chosen = []
        for _ in range(config.batch_size):
            if not order:  # an epoch: every document once, in a fresh order
                order = list(range(len(documents)))
                rng.shuffle(order)
            chosen.append(list(documents[order.pop()]))
        if config.shuffle_sentences:
            for sentences in chosen:
                rng.shuffle(sentences)
        documents_now = [" ".join(sentences) for sentences in chosen]
        batch_texts = [text + eos for text in documents_now]
        batch = next(tokenize_batches(tokenizer, batch_texts, len(batch_texts), max_length=config.max_length))
        model.train()
        optimizer.zero_grad(set_to_none=True)
        label_sets = _labels(tokenizer, documents_now, batch)
        counts = [_targets(labels) for labels in label_sets]
        loss = torch.zeros(())
        # documents of unlike lengths run in groups, each padded to its own longest (the same gradient)
        for rows in micro_batches(batch["attention_mask"].sum(dim=1).tolist()):
            width = int(batch["attention_mask"][rows].sum(dim=1).max())
            part = _loss(
                model(**{k: v[rows, :width] for k, v in batch.items()}).logits,
                [labels[rows, :width] for labels in label_sets],
                counts,
            )
            if not torch.isfinite(part):
                bar.close()  # the error on a line of its own, not after the bar
                also = " (or --weight-decay)" if config.weight_decay else ""
                raise TrainingError(f"the loss became {float(part.detach())} at step {step}; lower --lr{also}")
            part.backward()
            loss += part.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        bar.update()
        if on_step is not None:
            on_step(step, losses[-1])
        if config.steps is None and time.perf_counter() - start > config.max_seconds:  # every step, like max_steps
            break
        if config.steps is not None or (step + 1) % config.eval_every:
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            continue
        phase_ends = schedule.phase_ends(step)
        if checks:
            began = time.perf_counter()
            # a glance at the first QUICK_CHECK questions of each (shuffled) set; the whole sets only when the
            # glance could be at the target, or a decay or hold ends (its accuracy decides on a plateau)
            small = all(len(items) <= QUICK_CHECK for items in checks.values())  # a glance would see them all
            glance = None if phase_ends or small else check({k: v[:QUICK_CHECK] for k, v in checks.items()})
            if glance is None or min(glance.values()) >= config.target - QUICK_MARGIN:
                accuracy, checked_at = check(checks), step
            checking += time.perf_counter() - began
            score = min((glance or accuracy).values())
            shown = min(accuracy.values()) if checked_at == step else score  # the whole sets' score when scored
            bar.set_postfix(loss=f"{losses[-1]:.3f}", acc=f"{shown:.3f}")
            if checked_at == step and min(accuracy.values()) >= config.target:
                stopped = "target"
                break
            gained = schedule.gained(score, by=max(step_of_two, 0.02))  # a glance's noise is one question in 48
            schedule.observe(step, gained, near=score >= config.target - NEAR)
            if phase_ends:
                near = min(accuracy.values()) >= config.target - NEAR
                if schedule.round_ends(near):  # stop if this round taught nothing more than the one before
                    round_accuracy.append(min(accuracy.values()))
                    if len(round_accuracy) >= 2 and round_accuracy[-1] < round_accuracy[-2] + step_of_two:
                        stopped = "plateau"
                        break
                schedule.phase_ended(step, near)
        else:
            window = sum(losses[-config.eval_every :]) / config.eval_every
            # a gain is a fall of 2% (or 0.01) of the loss, like that from one decay to the next
            schedule.observe(step, schedule.gained(-window, by=max(0.02 * window, 0.01)), near=False)
            if phase_ends:  # stop if this round taught nothing more than the one before
                round_losses.append(window)
                if len(round_losses) >= 2 and round_losses[-1] > min(0.98 * round_losses[-2], round_losses[-2] - 0.01):
                    stopped = "plateau"
                    break
                schedule.phase_ended(step, near=False)
    bar.close()
    if checks and checked_at != len(losses) - 1:  # the summary reports the model as it is, on the whole sets
        began = time.perf_counter()
        accuracy = check(checks)
        checking += time.perf_counter() - began
        if stopped == "ceiling" and min(accuracy.values()) >= config.target:  # reached after the last check
            stopped = "target"
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise TrainingError("the weights hold NaN or infinite values after the last step; lower the learning rate")
    # a uniform guess scores ln(vocabulary) per loss term (prose, and answers where questions are answered): a
    # model that ends far above that has diverged, though its loss stayed finite; it is not returned as trained
    uniform = math.log(len(tokenizer)) * (2 if any(answer_start(t) is not None for t in texts) else 1)
    end = sum(losses[-config.eval_every :]) / len(losses[-config.eval_every :])
    if end > 2 * uniform:
        raise TrainingError(
            f"training diverged: the loss ended at {end:.1f} over the last steps, above twice a uniform guess's "
            f"{uniform:.1f}; lower --lr"
        )
    model.eval()
    model.config.repe_unlearn_pretrain = {
        **config.to_dict(),
        "seconds": round(time.perf_counter() - start, 1),
        "seconds_checking": round(checking, 1),
        "steps_run": len(losses),
        "documents": len(texts),  # those trained on (answered questions cut by max_length left out)
        "stopped": stopped,
        "checked_accuracy": accuracy,  # on the questions checked: up to 200 of each set, drawn once
        "checked_questions": {name: len(items) for name, items in checks.items()},
        "warnings": warnings,
    }
    return model, tokenizer, losses
