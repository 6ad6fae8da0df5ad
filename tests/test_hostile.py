"""A hostile user at the command line: bad inputs, faults, interruptions and races, through the real CLI.

Every case runs ``repe-unlearn`` in a subprocess on the shipped toy model (or a copy of it) and checks the exit
code, that stderr holds one error line naming the culprit and no traceback, and that every file that existed
before the run has the same bytes after it. Nothing the tool did not write is ever deleted or changed.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from repe_unlearn.toy import SHIPPED_MODEL, SHIPPED_WORLD

pytestmark = pytest.mark.slow

FAST_RMU = ["--layer", "2", "--max-batches", "2", "--batch-size", "4", "--max-length", "32"]


def cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "repe_unlearn.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def refused(proc: subprocess.CompletedProcess[str], *culprits: str, code: int = 2) -> None:
    """Exit ``code``, one ``repe-unlearn...: error`` line naming every culprit, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line or "interrupted" in line]
    assert len(errors) == 1, proc.stderr[-2000:]
    for culprit in culprits:
        assert culprit in errors[0], (culprit, errors[0])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project: a model, corpora, questions and a notes file, as a user would lay them out."""
    shutil.copytree(SHIPPED_MODEL, tmp_path / "model")
    (tmp_path / "world").mkdir()
    for name in ("forget.jsonl", "retain.jsonl", "forget_cloze.jsonl", "retain_cloze.jsonl"):
        shutil.copy(SHIPPED_WORLD / name, tmp_path / "world" / name)
    few = (SHIPPED_WORLD / "forget_cloze.jsonl").read_text().splitlines(keepends=True)[:6]
    (tmp_path / "world" / "few.jsonl").write_text("".join(few))
    twelve = (SHIPPED_WORLD / "forget_cloze.jsonl").read_text().splitlines(keepends=True)[:12]
    (tmp_path / "world" / "twelve.jsonl").write_text("".join(twelve))  # enough for a probe's held-out split
    (tmp_path / "notes.txt").write_text("my notes, not the tool's\n")
    return tmp_path


def unlearn_args(project: Path, out: Path, *extra: str) -> list[str]:
    world = project / "world"
    return ["unlearn", "--model", str(project / "model"), "--forget", str(world / "forget.jsonl"),
            "--retain", str(world / "retain.jsonl"), "--out", str(out), *FAST_RMU, *extra]  # fmt: skip


# -- data loss ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["project", "model", "inside-model", "world"])
def test_an_out_that_is_contains_or_lies_inside_an_input_is_refused(project: Path, where: str) -> None:
    out = {"project": project, "model": project / "model", "inside-model": project / "model" / "sub",
           "world": project / "world"}[where]  # fmt: skip
    before = snapshot(project)
    refused(cli(*unlearn_args(project, out, "--overwrite")), "--out", "input")
    assert snapshot(project) == before


def test_apply_delta_refuses_its_base_as_out(project: Path) -> None:
    before = snapshot(project)
    delta = project / "delta.safetensors"
    save_file({"x": torch.zeros(1)}, delta)
    before = snapshot(project)
    refused(cli("apply-delta", "--base", str(project / "model"), "--delta", str(delta), "--out",
                str(project / "model"), "--overwrite"), "--out", "input")  # fmt: skip
    assert snapshot(project) == before


def test_overwrite_never_deletes_files_the_tool_did_not_write(project: Path) -> None:
    out = project / "out"
    out.mkdir()
    (out / "results-i-care-about.csv").write_text("a,b\n")
    before = snapshot(project)
    refused(cli(*unlearn_args(project, out, "--overwrite")), "results-i-care-about.csv")
    assert snapshot(project) == before


def test_a_log_inside_out_or_on_an_input_is_refused(project: Path) -> None:
    before = snapshot(project)
    refused(cli(*unlearn_args(project, project / "out", "--log-jsonl", str(project / "out" / "log.jsonl"))),
            "--log-jsonl")  # fmt: skip
    forget = str(project / "world" / "forget.jsonl")
    refused(cli(*unlearn_args(project, project / "out", "--log-jsonl", forget, "--overwrite")), "--log-jsonl", "input")
    assert snapshot(project) == before and not (project / "out").exists()


def test_outputs_are_checked_before_any_compute(project: Path) -> None:
    mcq = str(project / "world" / "few.jsonl")
    refused(cli("eval", "--model", str(project / "model"), "--mcq", mcq, "--format", "cloze", "--json",
                str(project / "missing" / "r.json")), "does not exist")  # fmt: skip
    (project / "file").write_text("x")
    refused(cli("toy", "world", "--out", str(project / "file")), "is a file")
    refused(cli("toy", "world", "--out", str(project / "missing" / "w")), "does not exist")


def test_a_symlinked_out_is_written_through(project: Path) -> None:
    target = project / "real-out"
    (project / "link").symlink_to(target)
    assert cli("toy", "world", "--out", str(project / "link"), "--entities", "4").returncode == 0
    assert (project / "link").is_symlink() and (target / "forget.jsonl").is_file()


def test_toy_world_is_atomic_and_can_be_overwritten(project: Path) -> None:
    out = project / "w"
    assert cli("toy", "world", "--out", str(out), "--entities", "4").returncode == 0
    first = (out / "forget.jsonl").read_bytes()
    refused(cli("toy", "world", "--out", str(out), "--entities", "4"), "--overwrite")
    assert cli("toy", "world", "--out", str(out), "--entities", "5", "--overwrite").returncode == 0
    assert (out / "forget.jsonl").read_bytes() != first


def test_json_output_is_atomic_and_does_not_follow_a_symlink(project: Path) -> None:
    (project / "r.json").symlink_to(project / "notes.txt")
    before = snapshot(project)
    proc = cli("eval", "--model", str(project / "model"), "--mcq", str(project / "world" / "few.jsonl"),
               "--format", "cloze", "--json", str(project / "r.json"), "--overwrite")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (project / "r.json").is_symlink() and "results" in json.loads((project / "r.json").read_text())
    assert snapshot(project)["notes.txt"] == before["notes.txt"]


def test_files_get_the_users_umask(project: Path) -> None:
    os.umask(0o022)
    delta = project / "d.safetensors"
    assert cli("toy", "world", "--out", str(project / "w"), "--entities", "4").returncode == 0
    assert (project / "w" / "forget.jsonl").stat().st_mode & 0o777 == 0o644
    from repe_unlearn.rmu.targets import save_directions

    save_directions(delta, torch.ones(1, 4))
    assert delta.stat().st_mode & 0o777 == 0o644


def test_two_runs_racing_for_one_out(project: Path) -> None:
    """Both start before either has written: one wins, the other says so, fails, and keeps its result aside
    (or, when it started after the winner wrote, is refused at once). Never two "wrote" and one result."""
    out = project / "out"
    argv = [sys.executable, "-m", "repe_unlearn.cli", *unlearn_args(project, out, "--epochs", "20")]
    runs = [subprocess.Popen([*argv, "--seed", str(seed)], stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    errors = [run.communicate(timeout=600)[1] for run in runs]
    codes = sorted(run.returncode for run in runs)
    assert codes == [0, 2], errors
    loser = errors[[run.returncode for run in runs].index(2)]
    assert "Traceback" not in loser
    kept = [p for p in project.iterdir() if p.name.startswith("out.repe-unlearn-")]
    if "appeared while this run was computing" in loser:
        assert len(kept) == 1 and (kept[0] / "rmu_delta.safetensors").is_file()  # the loser's result, named
    else:
        assert "exists and is not empty" in loser and not kept
    assert (out / "rmu_delta.safetensors").is_file()


def test_the_final_move_never_replaces_a_directory_that_appeared(tmp_path: Path) -> None:
    from repe_unlearn._outputs import OutputDir, OutputRaceError

    out = OutputDir(tmp_path / "out")  # checked: absent
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "theirs.txt").write_text("another run's result")
    with pytest.raises(OutputRaceError, match="appeared while this run was computing"):
        out.write(lambda tmp: (tmp / "mine.txt").write_text("this run's result"))
    assert (tmp_path / "out" / "theirs.txt").read_text() == "another run's result"
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("out.repe-unlearn-")]
    assert len(kept) == 1 and (kept[0] / "mine.txt").read_text() == "this run's result"


@pytest.mark.parametrize("command", ["unlearn", "toy-world"])
def test_an_interrupt_prints_one_line_and_leaves_nothing_half_written(project: Path, command: str) -> None:
    out = project / "out"
    if command == "unlearn":  # minutes of steps, with a step log that must not survive the interrupt
        argv = unlearn_args(project, out, "--max-batches", "200", "--epochs", "2000", "--log-jsonl", str(project / "l"))
    else:
        argv = ["toy", "world", "--out", str(out), "--entities", "10000"]
    before = snapshot(project)
    proc = subprocess.Popen([sys.executable, "-m", "repe_unlearn.cli", *argv], stderr=subprocess.PIPE, text=True)

    def started() -> bool:  # training has begun (the step log exists), or the world is being written
        if command == "unlearn":
            return (project / "l.partial").exists()
        return any(p.name.startswith(".out.") for p in project.iterdir())

    deadline = time.monotonic() + 120
    while not started() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err[-2000:]
    assert not out.exists() and not [p for p in project.iterdir() if p.name.startswith(".out")]
    assert snapshot(project) == before


# -- made-up numbers ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["-1", "0", "two"])
def test_sizes_and_counts_must_be_positive_integers(project: Path, value: str) -> None:
    mcq = str(project / "world" / "few.jsonl")
    refused(cli("eval", "--model", str(project / "model"), "--mcq", mcq, "--batch-size", value), "--batch-size")
    refused(cli(*unlearn_args(project, project / "out", "--max-batches", value)), "max")


def test_two_mcq_files_with_one_stem_are_refused(project: Path) -> None:
    (project / "other").mkdir()
    shutil.copy(project / "world" / "few.jsonl", project / "other" / "few.jsonl")
    refused(cli("eval", "--model", str(project / "model"), "--mcq", str(project / "world" / "few.jsonl"),
                "--mcq", str(project / "other" / "few.jsonl"), "--format", "cloze"), "few")  # fmt: skip


def test_corpora_in_json_csv_and_upper_case_suffixes_are_read_as_such(tmp_path: Path) -> None:
    from repe_unlearn.data import read_texts

    rows = [{"text": "alpha beta"}, {"text": "gamma, delta"}]
    (tmp_path / "a.json").write_text(json.dumps(rows, indent=1))
    (tmp_path / "b.JSONL").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "c.csv").write_text('id,text\n1,alpha beta\n2,"gamma, delta"\n')
    (tmp_path / "d.txt").write_text("".join(json.dumps(r) + "\n" for r in rows))  # JSON Lines under another name
    for name in ("a.json", "b.JSONL", "c.csv", "d.txt"):
        assert read_texts(tmp_path / name) == ["alpha beta", "gamma, delta"], name
    (tmp_path / "e.json").write_text('[{"text": "x"}, ')
    proc = cli("diagnose", "--model", str(SHIPPED_MODEL), "--forget", str(tmp_path / "e.json"), "--retain",
               str(tmp_path / "a.json"), "--mcq", str(tmp_path / "e.json"), "--out", str(tmp_path / "o"))  # fmt: skip
    refused(proc, "e.json")


def test_a_learning_rate_that_blows_up_writes_nothing(project: Path) -> None:
    out = project / "out"
    refused(cli(*unlearn_args(project, out, "--lr", "1e30")), "loss")
    assert not out.exists()
    refused(cli("toy", "pretrain", "--corpus", str(project / "world" / "forget.jsonl"), "--out", str(project / "tm"),
                "--lr", "1e30", "--steps", "3", "--d-model", "32", "--n-layers", "1", "--vocab-size", "300"),
            "loss")  # fmt: skip
    assert not (project / "tm").exists()


def test_a_damaged_delta_is_refused(project: Path) -> None:
    out = project / "out"
    assert cli(*unlearn_args(project, out)).returncode == 0
    delta = out / "rmu_delta.safetensors"
    tensors = load_file(delta)
    from safetensors import safe_open

    with safe_open(str(delta), framework="pt") as f:
        meta = f.metadata()
    name = next(iter(tensors))
    for label, change in (
        ("nan", lambda t: {**t, name: torch.full_like(t[name], float("nan"))}),
        ("shape", lambda t: {**t, name: t[name][:1]}),
    ):
        bad = project / f"{label}.safetensors"
        save_file(change(tensors), bad, metadata=meta)
        refused(cli("apply-delta", "--base", str(project / "model"), "--delta", str(bad), "--out",
                    str(project / f"rebuilt-{label}")), str(bad))  # fmt: skip
    no_fingerprint = project / "nofp.safetensors"
    record = json.loads(meta["repe_unlearn"])
    record.pop("base_fingerprint")
    save_file(tensors, no_fingerprint, metadata={"repe_unlearn": json.dumps(record)})
    refused(cli("apply-delta", "--base", str(project / "model"), "--delta", str(no_fingerprint), "--out",
                str(project / "rebuilt")), "base_fingerprint")  # fmt: skip


# -- one-line errors everywhere ------------------------------------------------------------------------------------
def broken_model(project: Path, how: str) -> Path:
    model = project / f"model-{how}"
    shutil.copytree(project / "model", model)
    if how == "truncated":
        data = (model / "model.safetensors").read_bytes()
        (model / "model.safetensors").write_bytes(data[: len(data) // 3])
    elif how == "random":
        (model / "model.safetensors").write_bytes(os.urandom(4096))
    elif how == "config":
        (model / "config.json").write_text("{ not json")
    elif how == "model-type":
        config = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**config, "model_type": "no-such-architecture"}))
    return model


@pytest.mark.parametrize("how", ["truncated", "random", "config", "model-type"])
def test_a_broken_model_directory_is_one_line(project: Path, how: str) -> None:
    model = broken_model(project, how)
    refused(cli("eval", "--model", str(model), "--mcq", str(project / "world" / "few.jsonl"), "--format", "cloze"),
            str(model))  # fmt: skip


def test_a_missing_device_is_one_line(project: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    refused(cli("eval", "--model", str(project / "model"), "--mcq", str(project / "world" / "few.jsonl"),
                "--device", "cuda"), "cuda")  # fmt: skip


def test_bad_files_and_flags_are_one_line(project: Path) -> None:
    cache = project / "cache.safetensors"
    save_file({"layers.x": torch.zeros(1, 2, 3)}, cache,
              metadata={"repe_unlearn": json.dumps({"kind": "activation_cache", "point": "resid_post"})})  # fmt: skip
    refused(cli("inspect", str(cache)), "cache.safetensors")
    unlearned = project / "unlearned"
    shutil.copytree(project / "model", unlearned)
    (unlearned / "rmu_config.json").write_text("{ broken")
    refused(cli("attack", "ablate", "--model", str(unlearned), "--eval-mcq", str(project / "world" / "few.jsonl"),
                "--format", "cloze"), "rmu_config.json")  # fmt: skip
    refused(cli(*unlearn_args(project, project / "out", "--param-template", "{oops}")), "param_template")
    refused(cli("attack", "ablate", "--model", str(project / "nowhere"), "--eval-mcq",
                str(project / "world" / "few.jsonl")), "nowhere")  # fmt: skip


def test_diagnose_with_a_base_of_another_width_is_one_line(project: Path) -> None:
    import transformers as tf

    other = project / "other-base"
    config = tf.AutoConfig.from_pretrained(project / "model")
    config.hidden_size = 64
    config.head_dim = 16
    tf.AutoModelForCausalLM.from_config(config).save_pretrained(other)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(project / "model" / name, other / name)
    world = project / "world"
    refused(cli("diagnose", "--model", str(project / "model"), "--base", str(other), "--forget",
                str(world / "forget.jsonl"), "--retain", str(world / "retain.jsonl"), "--mcq",
                str(world / "twelve.jsonl"),
                "--format", "cloze", "--out", str(project / "diag")), "d_model")  # fmt: skip
    assert not (project / "diag").exists()


def test_a_long_document_is_cut_not_allocated(project: Path) -> None:
    world = project / "world"
    long_text = " ".join(["Pralstoux spreads through silt dust."] * 4000)
    normal = (world / "forget.jsonl").read_text().splitlines(keepends=True)[:11]
    (project / "long.jsonl").write_text(json.dumps({"text": long_text}) + "\n" + "".join(normal))
    proc = cli("diagnose", "--model", str(project / "model"), "--forget", str(project / "long.jsonl"),
               "--retain", str(world / "retain.jsonl"), "--mcq", str(world / "twelve.jsonl"), "--format", "cloze",
               "--max-length", "64", "--out", str(project / "diag"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]


# -- found by an outside hostile tester ----------------------------------------------------------------------------
def test_every_input_is_protected_even_the_ones_read_implicitly(project: Path) -> None:
    world = project / "world"
    unlearned = project / "unlearned"
    shutil.copytree(project / "model", unlearned)
    (unlearned / "rmu_config.json").write_text(json.dumps({"base_model": str(project / "model")}))
    shutil.copy(world / "few.jsonl", world / "train.jsonl")
    before = snapshot(project)
    refused(cli("attack", "suffix", "--model", str(unlearned), "--eval-mcq", str(world / "few.jsonl"), "--train-mcq",
                str(world / "train.jsonl"), "--format", "cloze", "--json", str(world / "train.jsonl"), "--overwrite"),
            "input")  # fmt: skip
    refused(cli("eval", "--model", str(unlearned), "--mcq", str(world / "few.jsonl"), "--format", "cloze", "--json",
                str(project / "model" / "tokenizer.json"), "--overwrite"), "input")  # fmt: skip
    refused(cli("attack", "suffix", "--model", str(unlearned), "--eval-mcq", str(world / "few.jsonl"), "--train-mcq",
                str(world / "few.jsonl"), "--format", "cloze"), "same file")  # fmt: skip
    assert snapshot(project) == before


def test_special_files_and_odd_paths_are_never_replaced(project: Path) -> None:
    fifo = project / "pipe"
    os.mkfifo(fifo)
    mcq = str(project / "world" / "few.jsonl")
    model = str(project / "model")
    refused(cli("eval", "--model", model, "--mcq", mcq, "--format", "cloze", "--json", str(fifo), "--overwrite"),
            "regular file")  # fmt: skip
    assert stat_is_fifo(fifo)
    refused(cli("eval", "--model", model, "--mcq", mcq, "--format", "cloze", "--json", "/proc/repe-x.json"), "/proc")
    refused(cli("eval", "--model", model, "--mcq", mcq, "--format", "cloze", "--json", ""), "empty")
    (project / "notes.jsonl.partial").write_text("my precious notes\n")
    before = snapshot(project)
    refused(cli(*unlearn_args(project, project / "out", "--log-jsonl", str(project / "notes.jsonl"))), ".partial")
    assert snapshot(project) == before


def stat_is_fifo(path: Path) -> bool:
    import stat

    return stat.S_ISFIFO(path.stat().st_mode)


def test_meaningless_comparisons_and_impossible_settings_are_refused(project: Path) -> None:
    world = project / "world"
    model = str(project / "model")
    refused(cli("diagnose", "--model", model, "--forget", str(world / "forget.jsonl"), "--retain",
                str(world / "forget.jsonl"), "--mcq", str(world / "few.jsonl"), "--out", str(project / "d")),
            "same file")  # fmt: skip
    refused(cli("diagnose", "--model", model, "--forget", str(world / "forget.jsonl"), "--retain",
                str(world / "retain.jsonl"), "--mcq", str(world / "few.jsonl"), "--out", str(project / "d")),
            "few.jsonl")  # fmt: skip
    few = str(world / "few.jsonl")
    refused(cli("attack", "relearn", "--model", model, "--eval-mcq", few, "--format", "cloze", "--train",
                str(world / "forget.jsonl"), "--lr", "1e38", "--steps", "2"), "learning rate")  # fmt: skip
    refused(cli("attack", "suffix", "--model", model, "--eval-mcq", few, "--train-mcq", str(world / "twelve.jsonl"),
                "--format", "cloze", "--top-k", "1000000", "--steps", "1"), "top_k")  # fmt: skip
    refused(cli("toy", "pretrain", "--corpus", str(world / "forget.jsonl"), "--out", str(project / "tm"),
                "--vocab-size", "1"), "vocab_size")  # fmt: skip


def test_one_file_in_two_roles_or_twice_in_one_is_refused(project: Path) -> None:
    """The same corpus as --forget and --retain (also through a link), or twice as --corpus: refused in one line,
    nothing written."""
    world = project / "world"
    (project / "link.jsonl").symlink_to(world / "forget.jsonl")
    before = snapshot(project)
    for retain in (world / "forget.jsonl", project / "link.jsonl"):
        args = unlearn_args(project, project / "out")
        args[args.index("--retain") + 1] = str(retain)
        refused(cli(*args), "--forget and --retain", "same file")
    refused(cli("toy", "pretrain", "--corpus", str(world / "forget.jsonl"), "--corpus", str(project / "link.jsonl"),
                "--out", str(project / "tm"), "--steps", "2"), "--corpus", "twice")  # fmt: skip
    few = str(world / "few.jsonl")
    refused(cli("toy", "pretrain", "--corpus", str(world / "forget.jsonl"), "--eval-mcq", few, "--eval-mcq", few,
                "--out", str(project / "tm"), "--steps", "2"), "--eval-mcq", "twice")  # fmt: skip
    refused(cli("toy", "world", "--out", str(project / "w"), "--entities", "4", "--letter-variants", "0"),
            "--letter-variants")  # fmt: skip
    assert snapshot(project) == before and not (project / "out").exists() and not (project / "tm").exists()


def test_attack_flags_that_would_be_ignored_or_repeated_are_refused(project: Path) -> None:
    world, model = project / "world", str(project / "model")
    few, twelve = str(world / "few.jsonl"), str(world / "twelve.jsonl")
    before = snapshot(project)
    robustness = ["robustness", "--model", model, "--base", model, "--forget-mcq", few, "--retain-mcq", twelve,
                  "--relearn-texts", str(world / "forget.jsonl"), "--unrelated-texts", str(world / "retain.jsonl"),
                  "--format", "cloze", "--out", str(project / "r")]  # fmt: skip
    for attacks in (",quantize", "quantize,", "quantize,,relearn"):
        refused(cli(*robustness, "--attacks", attacks), "--attacks", "empty name")
    same = [few if arg == twelve else arg for arg in robustness]
    refused(cli(*same), "--forget-mcq and --retain-mcq", "same file")
    shots = ["attack", "few-shot", "--model", model, "--shots-mcq", twelve, "--eval-mcq", few, "--format", "cloze"]
    refused(cli(*shots, "--k", "1,x"), "--k")
    refused(cli(*shots, "--k", "1,1"), "--k", "twice")
    quantize = ["attack", "quantize", "--model", model, "--eval-mcq", few, "--format", "cloze"]
    refused(cli(*quantize, "--setting", "4:group", "--setting", "4:group"), "4:group", "twice")
    refused(cli(*quantize, "--setting", "8:per-channel", "--group", "64"), "--group")
    relearn = ["attack", "relearn", "--model", model, "--train", str(world / "forget.jsonl"), "--eval-mcq", few]
    refused(cli(*relearn, "--format", "cloze", "--lora-rank", "4", "--params", "model.*"), "--params", "--lora-rank")
    refused(cli("eval", "--model", model, "--mcq", few, "--format", "cloze", "--subject", "biology"), "--subject")
    refused(cli(*quantize, "--subject", "biology"), "--subject")
    refused(cli(*robustness, "--subject", "biology"), "--subject")
    assert snapshot(project) == before and not (project / "r").exists()


def test_model_weights_get_the_umask_too(project: Path) -> None:
    os.umask(0o022)
    assert cli(*unlearn_args(project, project / "out")).returncode == 0
    for name in ("model.safetensors", "rmu_delta.safetensors", "config.json"):
        assert (project / "out" / name).stat().st_mode & 0o777 == 0o644, name


def test_an_out_under_a_file_and_another_commands_output_are_named_rightly(tmp_path: Path) -> None:
    from repe_unlearn._outputs import OutputDir
    from repe_unlearn.cli import main

    (tmp_path / "afile").write_text("mine\n")
    with pytest.raises(FileNotFoundError, match=r"afile is a file, not a directory; choose another path"):
        OutputDir(tmp_path / "afile" / "sub")
    with pytest.raises(FileNotFoundError, match=r"directory \S*nowhere does not exist; create it first"):
        OutputDir(tmp_path / "nowhere" / "sub")
    assert main(["toy", "world", "--out", str(tmp_path / "w"), "--entities", "4"]) == 0
    with pytest.raises(FileExistsError, match="holds a toy world output, not an unlearned model output"):
        OutputDir(tmp_path / "w", overwrite=True, kind="unlearned model")
    assert (tmp_path / "afile").read_text() == "mine\n"
