import json
from pathlib import Path

import pytest
import torch
import transformers as tf
from conftest import make_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

import repe_unlearn as ru
from repe_unlearn.evaluation import (
    MCQItem,
    encode_pair,
    evaluate_mcq,
    letter_prompt,
    loglikelihoods,
    perplexity,
    read_mcq,
)

ITEMS = [
    MCQItem("Which river runs through Ostrel?", ("the Vell", "the Marrow", "the Quill", "the Dun"), 2),
    MCQItem("  What does Brindle export?  ", ("salt", "wool", "glass", "tin"), 0),
    MCQItem("Pick one.", ("yes", "no"), 1),
]


@pytest.fixture(scope="module")
def letter_tokenizer() -> tf.PreTrainedTokenizerFast:
    """A tokenizer in which ' A', ' B', ... are single tokens, as in real LLM vocabularies."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [letter_prompt(item) + " A B C D" for item in ITEMS] * 30
    trainer = trainers.BpeTrainer(vocab_size=96, special_tokens=["<pad>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>")


def test_letter_prompt_is_lm_evals_template() -> None:
    assert letter_prompt(ITEMS[1], subject="biology") == (
        "The following are multiple choice questions (with answers) about biology.\n\n"
        "What does Brindle export?\nA. salt\nB. wool\nC. glass\nD. tin\nAnswer:"
    )


def test_encode_pair_moves_trailing_spaces_to_the_continuation(tokenizer: object) -> None:
    context, continuation = encode_pair(tokenizer, "the cat sat ", "on the mat")
    whole = tokenizer("the cat sat on the mat", add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    assert context == tokenizer("the cat sat", add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    assert context + continuation == whole


def test_one_pass_letter_scores_equal_one_request_per_choice(letter_tokenizer: object) -> None:
    model = make_model("llama")
    assert all(len(encode_pair(letter_tokenizer, "Answer:", f" {x}")[1]) == 1 for x in "ABCD")
    result = evaluate_mcq(model, letter_tokenizer, ITEMS, format="letter", batch_size=2)
    for item, prediction in zip(ITEMS, result.predictions, strict=True):
        requests = [
            encode_pair(letter_tokenizer, letter_prompt(item), f" {'ABCD'[k]}") for k in range(len(item.choices))
        ]
        expected = loglikelihoods(model, letter_tokenizer, requests)
        assert prediction.scores == pytest.approx(expected, abs=1e-4)
        assert prediction.pred == max(range(len(expected)), key=expected.__getitem__)
    assert result.n == 3 and result.accuracy == sum(p.pred == p.answer for p in result.predictions) / 3


def test_cloze_scores_are_summed_log_probs(tokenizer: object) -> None:
    model = make_model("gpt2")
    item = MCQItem("the cat sat on the", ("mat", "dog park"), 0)
    result = evaluate_mcq(model, tokenizer, [item], format="cloze")
    for k, choice in enumerate(item.choices):
        context, continuation = encode_pair(tokenizer, item.question, f" {choice}")
        ids = torch.tensor([context + continuation])
        with torch.no_grad():
            logprobs = model(ids).logits[0].log_softmax(-1)
        expected = sum(float(logprobs[len(context) - 1 + j, t]) for j, t in enumerate(continuation))
        assert result.predictions[0].scores[k] == pytest.approx(expected, abs=1e-4)
    assert result.acc_norm is not None


def test_batching_does_not_change_scores(tokenizer: object) -> None:
    model = make_model("qwen2")
    items = [MCQItem(f"the town {i} has a", ("river", "bridge and a park", "cat"), i % 3) for i in range(5)]
    one = evaluate_mcq(model, tokenizer, items, format="cloze", batch_size=1)
    many = evaluate_mcq(model, tokenizer, items, format="cloze", batch_size=7)
    for a, b in zip(one.predictions, many.predictions, strict=True):
        assert a.scores == pytest.approx(b.scores, abs=1e-4)


def test_evaluation_under_an_intervention(tokenizer: object) -> None:
    model = make_model("llama")
    items = [MCQItem("the cat sat on the", ("mat", "park", "world"), 0)]
    plain = evaluate_mcq(model, tokenizer, items, format="cloze")
    vector = ru.ControlVector({1: torch.randn(32, generator=torch.Generator().manual_seed(0))})
    steered = evaluate_mcq(model, tokenizer, items, format="cloze", intervention=vector.apply(model, 8.0))
    assert steered.predictions[0].scores != pytest.approx(plain.predictions[0].scores, abs=1e-3)
    assert ru.active_hooks(model) == []
    assert evaluate_mcq(model, tokenizer, items, format="cloze").predictions[0].scores == plain.predictions[0].scores


@pytest.mark.parametrize("batch_size", [1, 4])
def test_last_position_steering_acts_on_the_prompts_last_token_for_every_choice(
    tokenizer: object, batch_size: int
) -> None:
    """A continuation is scored from its context and all but its last token, so a row's last real token lies
    inside the continuation, at a different place for each choice; "last" must steer the prompt's last token,
    the one whose output predicts the answer, for every choice alike."""
    model = make_model("llama")
    items = [
        MCQItem("the cat sat on the", ("mat", "dog park bench", "world of rivers", "cat"), 1),
        MCQItem("a town by the", ("sea", "river bank and a mill", "hill"), 0),
    ]
    direction = torch.randn(32, generator=torch.Generator().manual_seed(1))
    vector = ru.ControlVector({1: direction})
    steered = evaluate_mcq(
        model, tokenizer, items, format="cloze", batch_size=batch_size,
        intervention=vector.apply(model, 6.0, positions="last"),
    )  # fmt: skip
    lengths = set()
    for item, prediction in zip(items, steered.predictions, strict=True):
        for k, choice in enumerate(item.choices):
            context, continuation = encode_pair(tokenizer, item.question, f" {choice}")
            lengths.add(len(continuation))
            ids = torch.tensor([context + continuation[:-1]])

            def add_at_prompt_end(module: object, args: object, output: object, at: int = len(context) - 1) -> object:
                hidden = output[0] if isinstance(output, tuple) else output
                hidden = hidden.clone()
                hidden[:, at] += 6.0 * direction
                return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

            handle = model.model.layers[1].register_forward_hook(add_at_prompt_end)
            with torch.no_grad():
                logprobs = model(ids).logits[0].log_softmax(-1)
            handle.remove()
            expected = sum(float(logprobs[len(context) - 1 + j, t]) for j, t in enumerate(continuation))
            assert prediction.scores[k] == pytest.approx(expected, abs=1e-4), (item.question, choice)
    assert max(lengths) > 1  # multi-token choices, where the row's last token is not the prompt's
    plain = evaluate_mcq(model, tokenizer, items, format="cloze")
    assert steered.predictions[0].scores != pytest.approx(plain.predictions[0].scores, abs=1e-3)


def test_perplexity_equals_the_models_own_loss(tokenizer: object) -> None:
    model = make_model("llama")
    text = "the cat sat on the mat"
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])  # type: ignore[operator]
    with torch.no_grad():
        loss = model(ids, labels=ids).loss
    assert perplexity(model, tokenizer, [text]) == pytest.approx(float(loss.exp()), rel=1e-5)
    two = perplexity(model, tokenizer, [text, "a dog ran in the park"], batch_size=2)
    assert two == pytest.approx(perplexity(model, tokenizer, [text, "a dog ran in the park"], batch_size=1), rel=1e-5)


def write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_read_mcq_formats(tmp_path: Path) -> None:
    rows = [{"question": "q?", "choices": ["a", "b"], "answer": 1}]
    assert read_mcq(write(tmp_path / "m.jsonl", rows)) == [MCQItem("q?", ("a", "b"), 1)]
    (tmp_path / "m.json").write_text(json.dumps(rows))
    assert read_mcq(tmp_path / "m.json") == [MCQItem("q?", ("a", "b"), 1)]
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    assert read_mcq(tmp_path / "m.parquet") == [MCQItem("q?", ("a", "b"), 1)]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"question": "q", "choices": ["a", "b"]}], r"m.jsonl:1: missing field\(s\) answer"),
        ([{"question": "q", "choices": ["a", "b"], "answer": 2}], r"m.jsonl:1: 'answer' must be an index 0..1"),
        ([{"question": "q", "choices": "ab", "answer": 0}], r"m.jsonl:1: 'choices' must be a list"),
        ([], r"holds no items"),
    ],
)
def test_read_mcq_errors(tmp_path: Path, rows: list[object], message: str) -> None:
    with pytest.raises(ru.DataError, match=message):
        read_mcq(write(tmp_path / "m.jsonl", rows))


def test_read_mcq_bad_json_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text('{"question": "q", "choices": ["a", "b"], "answer": 0}\n{oops\n')
    with pytest.raises(ru.DataError, match=r"m.jsonl:2: not valid JSON"):
        read_mcq(tmp_path / "m.jsonl")
