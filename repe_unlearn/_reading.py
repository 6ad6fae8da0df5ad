"""Corpora and MCQ files in the formats users have, read without torch (a command checks its inputs before it
loads the heavy libraries); `repe_unlearn.data` is their public home."""

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DataError

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _split_lines(text: str) -> list[str]:
    """Lines as a file iterator gives them (``\n``, ``\r\n`` or ``\r``), without their ends."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def read_texts(path: str | os.PathLike[str], *, text_field: str = "text", raw_lines: bool = False) -> list[str]:
    """Documents of a corpus, in file order, from the formats users already have.

    ``.jsonl``/``.ndjson`` (one JSON object per line, the text under ``text_field``), ``.json`` (one list of
    such objects, or of strings), ``.csv``/``.tsv`` (column ``text_field``), ``.parquet`` (column
    ``text_field``), a directory written by ``datasets.save_to_disk``, or any other file as plain text with one
    document per line — unless its content is JSON (a first line that is a JSON object, or a file that starts
    with ``[``), which is then read as JSON rather than trained on as text. Suffixes count in any case
    (``.JSONL``). Blank lines are skipped.

    ``raw_lines=True`` reads any file as the published RMU code reads every corpus but the bio one: each line
    is a document exactly as it stands, newline included (a JSONL line stays JSON text); nothing is skipped
    (filter by length afterwards, as ``RMUConfig.min_len`` does).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"corpus {path} does not exist")
    if raw_lines:
        if path.is_dir():
            raise DataError(f"{path} is a directory; raw lines are read from a file")
        try:
            with path.open(encoding="utf-8") as f:  # universal newlines, as open(path, "r") reads
                return list(f)
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read corpus {path}: {exc}") from None
    if path.is_dir():
        return _read_datasets_dir(path, text_field)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path, text_field)
    try:
        # the file's own lines (\n, \r\n or \r), as `for line in open(path)` gives them: str.splitlines would
        # also break inside JSON strings at U+2028, U+2029 and U+0085, which JSON allows unescaped
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read corpus {path}: {exc}") from None
    if suffix in (".csv", ".tsv"):
        return _read_csv(path, text, text_field, "\t" if suffix == ".tsv" else ",")
    lines = _split_lines(text)
    first = next((line.strip() for line in lines if line.strip()), "")
    if suffix == ".json" or (suffix not in (".jsonl", ".ndjson") and first.startswith("[")):
        return _read_json_list(path, text, text_field)
    # JSON Lines by suffix, or by content: a plain-text corpus whose first line is a JSON object would
    # otherwise be trained on as JSON syntax
    if suffix in (".jsonl", ".ndjson") or _json_object(first):
        return _read_jsonl(path, lines, text_field)
    return [line for line in lines if line.strip()]


def _json_object(line: str) -> bool:
    if not line.startswith("{"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def _json_lines(path: Path, lines: list[str]) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` of each non-blank line of a JSON Lines file."""
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None


def _json_list(path: Path, text: str, what: str) -> list[Any]:
    """The list a ``.json`` file holds (of ``what``)."""
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); a .json file is a list of {what}") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of {what}, got {type(rows).__name__}")
    return rows


def _read_jsonl(path: Path, lines: list[str], text_field: str) -> list[str]:
    texts = []
    for number, row in _json_lines(path, lines):
        if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
            raise DataError(f"{path}:{number}: expected an object with a string field {text_field!r}")
        texts.append(row[text_field])
    return texts


def _read_json_list(path: Path, text: str, text_field: str) -> list[str]:
    """A JSON document holding a list of records (``{text_field: ...}``) or of strings."""
    texts = []
    for i, row in enumerate(_json_list(path, text, "records or strings")):
        if isinstance(row, str):
            texts.append(row)
        elif isinstance(row, dict) and isinstance(row.get(text_field), str):
            texts.append(row[text_field])
        else:
            raise DataError(f"{path} item {i}: expected a string or an object with a string field {text_field!r}")
    return [t for t in texts if t.strip()]


def _read_csv(path: Path, text: str, text_field: str, delimiter: str) -> list[str]:
    import csv
    import io

    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    if reader.fieldnames is None or text_field not in reader.fieldnames:
        raise DataError(f"{path}: no column {text_field!r}; columns are {reader.fieldnames} (--text-field picks one)")
    try:
        return [row[text_field] for row in reader if (row.get(text_field) or "").strip()]
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None


def _read_parquet(path: Path, text_field: str) -> list[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"reading {path} needs pyarrow: pip install pyarrow") from None
    table = pq.read_table(path)
    if text_field not in table.column_names:
        raise DataError(f"{path}: no column {text_field!r}; columns are {table.column_names}")
    return [str(t) for t in table.column(text_field).to_pylist() if t]


def _read_datasets_dir(path: Path, text_field: str) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise DataError(f"{path} is a directory; reading a datasets directory needs: pip install datasets") from None
    try:
        data = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"{path} is not a directory written by datasets.save_to_disk ({exc})") from None
    if isinstance(data, datasets.DatasetDict):
        data = data["train"] if "train" in data else next(iter(data.values()))
    if text_field not in data.column_names:
        raise DataError(f"{path}: no column {text_field!r}; columns are {data.column_names}")
    return [str(t) for t in data[text_field] if t]


@dataclass(frozen=True)
class MCQItem:
    """One question with its choices and the index of the right one."""

    question: str
    choices: tuple[str, ...]
    answer: int
    entity: str | None = None  # what the question is about (the toy world's files say), to keep attacks honest


def _item(row: Any, where: str) -> MCQItem:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with question, choices, answer; got {type(row).__name__}")
    missing = [k for k in ("question", "choices", "answer") if k not in row]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(missing)}")
    question, choices, answer = row["question"], row["choices"], row["answer"]
    if not isinstance(question, str):
        raise DataError(f"{where}: 'question' must be a string, got {type(question).__name__}")
    if not isinstance(choices, (list, tuple)) or not all(isinstance(c, str) for c in choices) or len(choices) < 2:
        raise DataError(f"{where}: 'choices' must be a list of at least two strings, got {choices!r}")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise DataError(f"{where}: 'answer' must be an index 0..{len(choices) - 1} into choices, got {answer!r}")
    if len(choices) > len(LETTERS):
        raise DataError(f"{where}: {len(choices)} choices; at most {len(LETTERS)} are supported")
    entity = row.get("entity")
    return MCQItem(question, tuple(choices), answer, entity if isinstance(entity, str) and entity else None)


def read_mcq(path: str | os.PathLike[str]) -> list[MCQItem]:
    """Items from JSONL, JSON (a list of rows) or parquet with ``question``, ``choices``, ``answer``."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"MCQ file {path} is a directory; give a .jsonl, .json or .parquet file")
    if not path.is_file():
        raise DataError(f"MCQ file {path} does not exist")
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(f"reading {path} needs pyarrow: pip install pyarrow") from None
        rows: list[Any] = pq.read_table(path).to_pylist()
        items = [_item(row, f"{path} row {i}") for i, row in enumerate(rows)]
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from None
        if path.suffix.lower() == ".json":
            items = [_item(row, f"{path} item {i}") for i, row in enumerate(_json_list(path, text, "items"))]
        else:
            items = [_item(row, f"{path}:{number}") for number, row in _json_lines(path, _split_lines(text))]
    if not items:
        raise DataError(f"{path} holds no items")
    return items


def letter_prompt(item: MCQItem, subject: str | None = None) -> str:
    """lm-eval's zero-shot WMDP/MMLU prompt, with the description line when ``subject`` is given."""
    description = f"The following are multiple choice questions (with answers) about {subject}.\n\n" if subject else ""
    options = "".join(f"{LETTERS[i]}. {choice}\n" for i, choice in enumerate(item.choices))
    return f"{description}{item.question.strip()}\n{options}Answer:"
