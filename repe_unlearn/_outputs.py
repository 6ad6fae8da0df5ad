"""Where results go: every output path checked before any compute, written atomically, nothing else deleted.

Rules, for every command that writes:

- an output directory may not be, contain, or lie inside an input (model, base, corpora, MCQ files, vectors,
  delta), whatever the flags; an output file may not be an input or lie inside an input directory;
- an output directory is filled in a temporary sibling and renamed into place at the end, so an interrupted
  run leaves nothing half-written; the rename fails rather than replace a directory that appeared while the
  run computed (the result is then kept beside it, under a name that says so, and the run fails);
- ``--overwrite`` replaces only what this tool wrote: each output directory carries a list of its files
  (:data:`MARKER`), and a directory holding anything else is refused, naming what it holds;
- a symlinked output directory is written through (its target is replaced, the link stays); a mount point,
  a missing parent or a parent that cannot be written is refused up front;
- files are written to a temporary file renamed over the target (never written through a symlink), with
  the permissions the user's umask gives new files.
"""

import errno
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .errors import ConfigError

MARKER = ".repe-unlearn-output.json"  # the files an output directory was written with
PathLike = str | os.PathLike[str]


class OutputRaceError(FileExistsError):
    """The output directory appeared while the run computed; the result was kept beside it."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _real(path: PathLike) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def _inside(child: Path, parent: Path) -> bool:
    return child != parent and parent in child.parents


def _check_against_inputs(target: Path, inputs: Iterable[PathLike | None], what: str, *, is_dir: bool) -> None:
    for given in inputs:
        if given is None:
            continue
        source = _real(given)
        if target == source:
            raise ConfigError(f"{what} {target} is the input {given}; choose another path (nothing was written)")
        if is_dir and _inside(source, target):
            raise ConfigError(f"{what} {target} contains the input {given}; choose a path outside every input")
        if _inside(target, source):
            raise ConfigError(f"{what} {target} lies inside the input {given}; choose a path outside every input")


def _marker(directory: Path) -> dict[str, Any]:
    """A directory's marker, or {} when it has no readable one."""
    try:
        record = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _own_files(directory: Path) -> list[str] | None:
    """The files a directory's marker lists, or None when it has no readable marker."""
    files = _marker(directory).get("files")
    return [str(f) for f in files] if isinstance(files, list) else None


def _present(directory: Path) -> list[str]:
    found = (p for p in directory.rglob("*") if (p.is_file() or p.is_symlink()) and p.name != MARKER)
    return sorted(str(p.relative_to(directory)) for p in found)


def _foreign(directory: Path) -> list[str]:
    """Files in ``directory`` that this tool did not write there (all of them when it has no marker)."""
    own = set(_own_files(directory) or [])
    return [f for f in _present(directory) if f not in own]


def _probe(directory: Path, flag: str, given: PathLike) -> None:
    """Create and remove a file in ``directory``: the only honest test that a result can be written there
    (permission bits say nothing for root, /proc or /sys)."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".repe-unlearn-probe.")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise PermissionError(f"cannot write in {directory} (for {flag} {given}): {exc.strerror}") from None


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


class OutputDir:
    """An output directory, checked when made (before any compute) and filled by :meth:`write`."""

    def __init__(
        self,
        out: PathLike,
        *,
        overwrite: bool = False,
        inputs: Iterable[PathLike | None] = (),
        kind: str | None = None,
    ) -> None:
        """``kind`` names what is written ("toy world", "robustness", ...): ``--overwrite`` replaces only an
        output of the same kind, so one command's ``--out`` never deletes another command's results."""
        self.kind = kind
        if not str(out).strip():
            raise ConfigError("--out is empty; give a directory path")
        if os.path.islink(out):
            try:
                os.stat(out)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise ConfigError(f"--out {out} is a symlink that loops; give a directory path") from None
        self.given = Path(out)
        # a symlink is written through: its target is what gets replaced, the link stays
        self.target = _real(out)
        self.overwrite = overwrite
        parent = self.target.parent
        if not parent.is_dir():
            raise FileNotFoundError(f"{_missing_directory(parent)} (for --out {out})")
        _probe(parent, "--out", out)
        if self.target.exists() or self.target.is_symlink():
            if not self.target.is_dir():
                raise FileExistsError(f"--out {out} is a file, not a directory; choose a directory path")
            if os.path.ismount(self.target):
                raise ConfigError(f"--out {out} is a mount point, which cannot be replaced; use a directory inside it")
            if not os.access(self.target, os.W_OK | os.X_OK):
                raise PermissionError(f"--out {out} is not writable")
        _check_against_inputs(self.target, inputs, "--out", is_dir=True)
        self._check_replaceable()

    def _check_replaceable(self) -> None:
        if not self.target.is_dir() or not any(self.target.iterdir()):
            return
        if not self.overwrite:
            raise FileExistsError(f"{self.given} exists and is not empty; pass --overwrite to replace it")
        foreign = _foreign(self.target)
        if foreign:
            raise FileExistsError(
                f"{self.given} holds files repe-unlearn did not write there ({_listing(foreign)}); --overwrite "
                "replaces only this tool's outputs: move them or choose another --out"
            )
        marker = _marker(self.target)
        written = marker.get("kind")
        if self.kind is not None and marker and written != self.kind:
            what = f"{_article(written)} {written} output" if written else "an output of another repe-unlearn command"
            raise FileExistsError(
                f"{self.given} holds {what}, not {_article(self.kind)} {self.kind} output; --overwrite replaces only "
                "the same kind of "
                "output: choose another --out, or remove it yourself"
            )

    def check_file(self, path: PathLike | None, flag: str) -> None:
        """Refuse an output file (``--log-jsonl``) that would land inside this directory."""
        if path is not None and (_real(path) == self.target or _inside(_real(path), self.target)):
            raise ConfigError(f"{flag} {path} lies inside --out {self.given}, which is replaced at the end")

    def write(self, fill: Callable[[Path], Any]) -> Path:
        """Call ``fill(tmp_dir)``, record what it wrote, and move the directory into place."""
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", dir=self.target.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result should look like any new directory
        try:
            fill(tmp)
            _apply_umask(tmp)  # some writers (safetensors) make private files; results look like any new file
            files = _present(tmp)
            record = {"tool": "repe-unlearn", "kind": self.kind, "files": files}
            (tmp / MARKER).write_text(json.dumps(record, indent=1) + "\n")
            os.chmod(tmp / MARKER, 0o666 & ~_umask())
            self._move(tmp)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        return self.given

    def _move(self, tmp: Path) -> None:
        target = self.target
        old = None
        if self.overwrite and target.is_dir() and any(target.iterdir()):
            self._check_replaceable()  # again: files may have appeared while the run computed
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old / target.name)
        try:
            os.rename(tmp, target)  # fails on a non-empty directory: never replaces what appeared meanwhile
        except OSError as exc:
            if old is not None:  # put the previous result back
                os.replace(old / target.name, target)
                shutil.rmtree(old)
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
            kept = target.parent / f"{target.name}.repe-unlearn-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
            os.rename(tmp, kept)
            raise OutputRaceError(
                f"{self.given} appeared while this run was computing and was left alone; the result is in {kept}"
            ) from None
        if old is not None:
            shutil.rmtree(old)


def _apply_umask(root: Path) -> None:
    mask = _umask()
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def check_output_file(path: PathLike | None, flag: str, *, overwrite: bool, inputs: Iterable[PathLike | None]) -> None:
    """Before any compute: ``path`` (``--json`` ...) can be written, is no input, and replaces nothing unasked
    (a device, FIFO or socket is never replaced, whatever the flags)."""
    if path is None:
        return
    if not str(path).strip():
        raise ConfigError(f"{flag} is empty; give a file path")
    target = _real(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(f"{_missing_directory(target.parent)} (for {flag} {path})")
    if target.is_dir():
        raise IsADirectoryError(f"{flag} {path} is a directory; give a file path")
    if target.exists() and not stat.S_ISREG(target.stat().st_mode):
        raise ConfigError(f"{flag} {path} is not a regular file (a device, FIFO or socket); give a file path")
    _probe(target.parent, flag, path)
    _check_against_inputs(target, inputs, flag, is_dir=False)
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")


def write_text_atomically(path: PathLike, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path`` (a symlink at ``path``
    is replaced, not followed), with the permissions the umask gives new files."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fix_mode(path: PathLike) -> None:
    """Give a file made by ``mkstemp`` (mode 0600) the permissions the umask gives new files."""
    os.chmod(path, 0o666 & ~_umask())


__all__ = ["MARKER", "OutputDir", "OutputRaceError", "check_output_file", "fix_mode", "write_text_atomically"]


def _article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" else "a"


def _missing_directory(path: Path) -> str:
    """Why ``path`` cannot hold an output, and what to do: it does not exist (create it), or it or a folder
    above it is a file (choose another path)."""
    for above in (path, *path.parents):
        if above.exists() and not above.is_dir():
            return f"{above} is a file, not a directory; choose another path"
        if above.exists():
            break
    return f"directory {path} does not exist; create it first"
