"""Train a tokenizer and a small Llama-architecture causal LM from scratch on any corpora.

Used to make the toy model the package ships; works on any list of documents. Each step samples
documents and shuffles the sentences within each, so that every fact is learned wherever it stands in
its paragraph; the loss is the full-sequence LM loss over non-pad tokens.
"""

import random
import re
import time
from collections.abc import Callable, Sequence

import torch
import transformers as tf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm

from ..data import tokenize_batches
from ..errors import DataError, TrainingError
from .config import PretrainConfig

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")


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


def pretrain(
    texts: Sequence[str],
    config: PretrainConfig | None = None,
    *,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[tf.LlamaForCausalLM, tf.PreTrainedTokenizerFast, list[float]]:
    """Train tokenizer and model on ``texts``; returns (model in eval mode, tokenizer, loss per step)."""
    config = config or PretrainConfig()
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise DataError("no text to pretrain on")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    tokenizer = train_tokenizer(texts, config.vocab_size)
    model_config = tf.LlamaConfig(
        hidden_size=config.d_model,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_heads,
        intermediate_size=config.d_mlp,
        vocab_size=len(tokenizer),
        max_position_embeddings=max(256, config.max_length),
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = tf.LlamaForCausalLM(model_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=config.steps)
    documents = [_sentences(t) for t in texts]
    eos = tokenizer.eos_token
    losses = []
    model.train()
    bar = tqdm(range(config.steps), desc="pretrain", disable=not progress, unit="step")
    start = time.perf_counter()
    for step in bar:
        chosen = [list(documents[rng.randrange(len(documents))]) for _ in range(config.batch_size)]
        if config.shuffle_sentences:
            for sentences in chosen:
                rng.shuffle(sentences)
        batch_texts = [" ".join(sentences) + eos for sentences in chosen]
        batch = next(tokenize_batches(tokenizer, batch_texts, len(batch_texts), max_length=config.max_length))
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        if not torch.isfinite(loss):
            raise TrainingError(f"the loss became {float(loss.detach())} at step {step}; lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if on_step is not None:
            on_step(step, losses[-1])
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise TrainingError("the weights hold NaN or infinite values after the last step; lower the learning rate")
    model.eval()
    model.config.repe_unlearn_pretrain = {**config.to_dict(), "seconds": round(time.perf_counter() - start, 1)}
    return model, tokenizer, losses
