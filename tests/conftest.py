"""Fixtures: tiny random models of every supported architecture and a tokenizer trained here (no downloads)."""

import pytest
import torch
import transformers as tf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import nn

ARCHS = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "gpt2", "gpt_neox"]
N_LAYERS = 4
D_MODEL = 32
VOCAB = 96


def make_config(arch: str) -> tf.PretrainedConfig:
    """A 4-layer, d_model 32 config of ``arch``."""
    ids = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    if arch == "gpt2":
        return tf.GPT2Config(n_embd=D_MODEL, n_layer=N_LAYERS, n_head=4, vocab_size=VOCAB, n_positions=64, **ids)
    if arch == "gpt_neox":
        return tf.GPTNeoXConfig(
            hidden_size=D_MODEL,
            num_hidden_layers=N_LAYERS,
            num_attention_heads=4,
            intermediate_size=64,
            vocab_size=VOCAB,
            max_position_embeddings=64,
            **ids,
        )
    config_class = {
        "llama": tf.LlamaConfig,
        "mistral": tf.MistralConfig,
        "qwen2": tf.Qwen2Config,
        "qwen3": tf.Qwen3Config,
        "gemma": tf.GemmaConfig,
        "gemma2": tf.Gemma2Config,
        "phi3": tf.Phi3Config,
    }[arch]
    return config_class(
        hidden_size=D_MODEL,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        head_dim=8,
        **ids,
    )


def make_model(arch: str, seed: int = 0) -> nn.Module:
    """A tiny randomly initialised causal LM in eval mode."""
    torch.manual_seed(seed)
    return tf.AutoModelForCausalLM.from_config(make_config(arch)).eval()


@pytest.fixture(params=ARCHS)
def arch(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def model(arch: str) -> nn.Module:
    return make_model(arch)


@pytest.fixture
def llama() -> nn.Module:
    return make_model("llama")


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    """Three rows: full, right-padded, left-padded (masks say which positions are real)."""
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, VOCAB, (3, 7), generator=generator)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, :2] = 0
    input_ids[mask == 0] = 0
    return {"input_ids": input_ids, "attention_mask": mask}


# forget-like and retain-like texts of varied lengths (so that batches need padding)
FORGET = [f"the virus {i} spreads" + " through water" * (i % 3) + f" and grows in broth {i % 7}" for i in range(24)]
RETAIN = [f"the town {i} has a river" + " and a bridge" * (i % 4) + f" and a market on day {i % 5}" for i in range(24)]


CORPUS = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "the virus spreads through water",
    "the town has a river and a bridge",
    "hello world from a tiny tokenizer",
] * 20


@pytest.fixture(scope="session")
def tokenizer() -> tf.PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with VOCAB entries, trained on a few sentences."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        show_progress=False,
        initial_alphabet=[],
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
