import json
from pathlib import Path

import pytest
import torch

import repe_unlearn as ru


def test_jsonl_plain_text_parquet_and_datasets_dirs(tmp_path: Path) -> None:
    texts = ["first document", "second one", "third"]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)))
    (tmp_path / "c.txt").write_text("\n".join(texts) + "\n\n")
    assert ru.read_texts(tmp_path / "c.jsonl") == texts
    assert ru.read_texts(tmp_path / "c.txt") == texts
    (tmp_path / "q.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    assert ru.read_texts(tmp_path / "q.jsonl", text_field="body") == ["x"]

    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"text": texts}), tmp_path / "c.parquet")
    assert ru.read_texts(tmp_path / "c.parquet") == texts

    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "ds"))
    assert ru.read_texts(tmp_path / "ds") == texts


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "ok"}\n{"text": \n', r"c.jsonl:2: not valid JSON"),
        ('{"text": "ok"}\n["a"]\n', r"c.jsonl:2: expected an object with a string field 'text'"),
        ('{"txt": "ok"}\n', r"c.jsonl:1: expected an object"),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "c.jsonl").write_text(content)
    with pytest.raises(ru.DataError, match=message):
        ru.read_texts(tmp_path / "c.jsonl")


def test_missing_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ru.DataError, match="does not exist"):
        ru.read_texts(tmp_path / "nope.jsonl")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(ru.DataError, match="cannot read corpus"):
        ru.read_texts(tmp_path / "bin.txt")


def test_tokenize_batches_pads_either_side(tokenizer: object) -> None:
    texts = ["the cat sat on the mat", "a dog"]
    right = next(ru.tokenize_batches(tokenizer, texts, 2))
    left = next(ru.tokenize_batches(tokenizer, texts, 2, padding_side="left", pad_token_id=2))
    n = int(right["attention_mask"][1].sum())
    assert torch.equal(right["input_ids"][1, :n], left["input_ids"][1, -n:])
    assert bool((left["input_ids"][1, :-n] == 2).all()) and bool((right["attention_mask"][1, n:] == 0).all())
    with pytest.raises(ru.ConfigError, match="batch_size must be a positive integer"):
        next(ru.tokenize_batches(tokenizer, texts, 0))
