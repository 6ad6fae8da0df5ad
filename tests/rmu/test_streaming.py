"""RMU on a model path: layers 0..ℓ only, the output streamed from the base checkpoint, cached epochs."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import transformers as tf
from conftest import ARCHS, FORGET, N_LAYERS, RETAIN, make_model

import repe_unlearn as ru
from repe_unlearn import rmu
from repe_unlearn._checkpoint import INDEX, Checkpoint, NotLoaded, load_first_layers, write_patched
from repe_unlearn.cli import main
from repe_unlearn.rmu.artifacts import write_model

CONFIG = rmu.RMUConfig(layer=2, lr=0.01, batch_size=4, max_batches=3, max_length=16, steering_coeff=(5.0,))


def saved(tmp_path: Path, arch: str, shards: bool = False) -> Path:
    directory = tmp_path / f"{arch}-base"
    make_model(arch).save_pretrained(directory, max_shard_size="40KB" if shards else "5GB")
    return directory


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_the_first_layers_alone_give_the_same_activations(tmp_path: Path, arch: str, batch: dict) -> None:
    base = saved(tmp_path, arch)
    full = tf.AutoModelForCausalLM.from_pretrained(base).eval()
    part = load_first_layers(base, 3)
    assert part is not None and ru.n_layers(part) == 3
    whole = ru.collect(full, batch, [0, 2])
    first = ru.collect(part, batch, [0, 2])
    assert torch.equal(whole[0], first[0]) and torch.equal(whole[2], first[2])
    # only the embeddings and layers 0..2 were built: no later layer, no final norm, no separate LM head
    layers = ru.decoder_layers(full)
    later = {id(p) for layer in layers[3:] for p in layer.parameters()}
    kept = {name for name, p in full.named_parameters() if id(p) not in later}
    assert {name for name, _ in part.named_parameters()} < kept
    assert isinstance(part.get_output_embeddings(), NotLoaded) and isinstance(ru.final_norm(part), NotLoaded)
    with pytest.raises(ru.ConfigError, match=r"layers 0\.\.2 only"):
        part(**batch)
    assert load_first_layers(base, N_LAYERS) is None  # every layer: load the full model instead


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "gemma2", "phi3"])
def test_the_streamed_output_equals_the_full_models(tmp_path: Path, arch: str, batch: dict, tokenizer: object) -> None:
    base = saved(tmp_path, arch, shards=True)
    assert (base / "model.safetensors.index.json").is_file()  # several shards and an index
    full = tf.AutoModelForCausalLM.from_pretrained(base).eval()
    part = load_first_layers(base, CONFIG.layer + 1)
    assert part is not None
    results = [rmu.unlearn(m, tokenizer, [FORGET], [RETAIN], CONFIG, progress=False) for m in (full, part)]
    assert [(h.forget_loss, h.retain_loss) for h in results[0].history] == [
        (h.forget_loss, h.retain_loss) for h in results[1].history
    ]
    (tmp_path / "saved").mkdir()
    (tmp_path / "streamed").mkdir()
    assert write_model(tmp_path / "saved", full, results[0].parameter_names, None) == "save_pretrained"
    assert write_model(tmp_path / "streamed", part, results[1].parameter_names, base) == "streamed"
    streamed = sorted(p.name for p in (tmp_path / "streamed").iterdir())
    assert streamed == sorted(p.name for p in base.iterdir())  # the base's shards, index and configs
    for name in ("model.safetensors.index.json", "config.json"):
        assert (tmp_path / "streamed" / name).read_bytes() == (base / name).read_bytes()
    with torch.no_grad():
        a = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "saved").eval()(**batch).logits
        b = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "streamed").eval()(**batch).logits
    assert torch.equal(a, b)
    # every tensor but the updated ones keeps the base's bytes
    old, new = Checkpoint(base), Checkpoint(tmp_path / "streamed")
    changed = {n for n in old.locations if not torch.equal(old.read(n), new.read(n))}
    assert changed == set(results[1].parameter_names)


def test_a_partial_model_is_never_written_with_save_pretrained(tmp_path: Path) -> None:
    base = saved(tmp_path, "llama")
    part = load_first_layers(base, 2)
    assert part is not None
    with pytest.raises(ru.ConfigError, match="streaming"):
        write_model(tmp_path, part, ["model.layers.1.mlp.down_proj.weight"], tmp_path / "nowhere")
    with pytest.raises(ru.FormatError, match="shape"):
        write_patched(Checkpoint(base), tmp_path, {"model.layers.1.mlp.down_proj.weight": torch.zeros(3)})


def run_toyish(model: torch.nn.Module, tokenizer: object, **overrides: object) -> tuple[list, dict, rmu.RMUResult]:
    # layer 0 lies below the updated layers 1, 2: cached epochs skip it
    config = dataclasses.replace(CONFIG, epochs=3, max_batches=2, update_layers=(1, 2), **overrides)  # type: ignore[arg-type]
    result = rmu.unlearn(model, tokenizer, [FORGET], [RETAIN], config, progress=False)
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if n in result.parameter_names}
    return [(h.forget_loss, h.retain_loss) for h in result.history], weights, result


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt_neox"])
def test_cached_epochs_equal_uncached_ones(arch: str, tokenizer: object) -> None:
    plain_losses, plain_weights, plain = run_toyish(make_model(arch), tokenizer, epoch_cache_gb=0.0)
    losses, weights, cached = run_toyish(make_model(arch), tokenizer)
    assert losses == plain_losses and all(torch.equal(weights[n], plain_weights[n]) for n in weights)
    assert [h.cached for h in cached.history] == [False, False] + [True] * 4  # epochs 2 and 3 from the cache
    assert not any(h.cached for h in plain.history)
    # a budget that holds a part: those batches run from the cache, the others in full; the same numbers
    small_losses, _, small = run_toyish(make_model(arch), tokenizer, epoch_cache_gb=1e-5)
    assert small_losses == plain_losses and not all(h.cached for h in small.history[2:])


def test_cached_epochs_keep_interventions_once(tokenizer: object) -> None:
    """Steering below and at the first updated layer acts in cached epochs exactly as in full passes."""
    results = []
    for gb in (0.0, None):
        model = make_model("qwen2")
        torch.manual_seed(3)
        vector = ru.ControlVector({0: torch.randn(32), 1: torch.randn(32)}, point="resid_pre")
        with vector.apply(model, 2.0):
            results.append(run_toyish(model, tokenizer, epoch_cache_gb=gb)[0])
    assert results[0] == results[1]


def test_dropout_in_training_mode_turns_the_cache_off(tokenizer: object) -> None:
    model = make_model("gpt2")  # dropout 0.1, and reference mode trains in .train()
    _, _, result = run_toyish(model, tokenizer, reference_mode=True)
    assert not any(h.cached for h in result.history)
    _, _, result = run_toyish(make_model("gpt2"), tokenizer)  # eval mode: no dropout runs, the cache is on
    assert any(h.cached for h in result.history)


# -- the command line ---------------------------------------------------------------------------------------------
@pytest.fixture
def workdir(tmp_path: Path, tokenizer: object) -> Path:
    make_model("gpt_neox").save_pretrained(tmp_path / "base", max_shard_size="40KB")
    tokenizer.save_pretrained(tmp_path / "base")  # type: ignore[attr-defined]
    (tmp_path / "forget.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in FORGET))
    (tmp_path / "retain.txt").write_text("\n".join(RETAIN) + "\n")
    return tmp_path


def unlearn(workdir: Path, out: str, *extra: str) -> int:
    fast = ["--layer", "2", "--lr", "0.01", "--batch-size", "4", "--max-batches", "2", "--max-length", "16"]
    files = ["--forget", str(workdir / "forget.jsonl"), "--retain", str(workdir / "retain.txt")]
    return main(["unlearn", "--model", str(workdir / "base"), *files, *fast, "--out", str(workdir / out), *extra])


def test_cli_layers_only_and_full_model_write_the_same_model(workdir: Path) -> None:
    assert unlearn(workdir, "part", "--epochs", "2", "--log-jsonl", str(workdir / "part.jsonl")) == 0
    assert unlearn(workdir, "full", "--epochs", "2", "--full-model", "--log-jsonl", str(workdir / "full.jsonl")) == 0
    summary = json.loads((workdir / "part" / "rmu_config.json").read_text())
    assert summary["layers_loaded"] == f"0..2 of {N_LAYERS}" and summary["weights_written"] == "streamed"
    assert "layers_loaded" not in json.loads((workdir / "full" / "rmu_config.json").read_text())
    shards = sorted(p.name for p in (workdir / "base").glob("*.safetensors"))
    assert len(shards) > 1
    for name in shards:
        assert (workdir / "part" / name).read_bytes() == (workdir / "full" / name).read_bytes()
    logs = [[json.loads(line) for line in (workdir / f"{w}.jsonl").read_text().splitlines()] for w in ("part", "full")]
    assert [(x["forget_loss"], x["retain_loss"]) for x in logs[0]] == [
        (x["forget_loss"], x["retain_loss"]) for x in logs[1]
    ]
    assert [x["cached"] for x in logs[0]] == [False, False, True, True]


def test_cli_apply_delta_streams_the_same_model(workdir: Path, tmp_path: Path) -> None:
    assert unlearn(workdir, "out") == 0
    delta = workdir / "out" / "rmu_delta.safetensors"
    assert (
        main(["apply-delta", "--base", str(workdir / "base"), "--delta", str(delta), "--out", str(tmp_path / "re")])
        == 0
    )
    for shard in (workdir / "base").glob("*.safetensors"):
        assert (tmp_path / "re" / shard.name).read_bytes() == (workdir / "out" / shard.name).read_bytes()
    make_model("gpt_neox", seed=5).save_pretrained(tmp_path / "other")
    assert (
        main(["apply-delta", "--base", str(tmp_path / "other"), "--delta", str(delta), "--out", str(tmp_path / "x")])
        == 2
    )
    assert not (tmp_path / "x").exists()


def test_unlearn_from_pretrained_holds_the_first_layers_and_writes_the_model(tmp_path: Path, tokenizer: object) -> None:
    base = saved(tmp_path, "llama", shards=True)
    tokenizer.save_pretrained(base)  # type: ignore[attr-defined]
    result = rmu.unlearn_from_pretrained(base, [FORGET], [RETAIN], CONFIG, out=tmp_path / "out", progress=False)
    full = tf.AutoModelForCausalLM.from_pretrained(base).eval()
    expected = rmu.unlearn(full, tokenizer, [FORGET], [RETAIN], CONFIG, progress=False)
    assert [h.forget_loss for h in result.history] == [h.forget_loss for h in expected.history]
    written = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    for name, p in written.named_parameters():
        assert torch.equal(p, dict(full.named_parameters())[name]), name
    with pytest.raises(FileExistsError):  # the output is checked before any compute
        rmu.unlearn_from_pretrained(base, [FORGET], [RETAIN], CONFIG, out=tmp_path / "out", progress=False)


def test_bf16_checkpoints_stream_and_a_wider_run_warns(tmp_path: Path, tokenizer: object) -> None:
    """The CUDA recipe's dtype on the CPU: a bf16 checkpoint, trained in bf16, written bit for bit as a full
    bf16 model would be; trained in fp32, the rounding to the checkpoint's bf16 is announced."""
    base = tmp_path / "bf16"
    make_model("llama").to(torch.bfloat16).save_pretrained(base)
    tokenizer.save_pretrained(base)  # type: ignore[attr-defined]
    config = dataclasses.replace(CONFIG, max_batches=2)
    rmu.unlearn_from_pretrained(base, [FORGET], [RETAIN], config, out=tmp_path / "a", dtype="bfloat16", progress=False)
    full = tf.AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16).eval()
    rmu.unlearn(full, tokenizer, [FORGET], [RETAIN], config, progress=False)
    written = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "a", dtype=torch.bfloat16)
    assert all(torch.equal(p, dict(full.named_parameters())[n]) for n, p in written.named_parameters())
    with pytest.warns(UserWarning, match="rounded"):
        rmu.unlearn_from_pretrained(
            base, [FORGET], [RETAIN], config, out=tmp_path / "b", dtype="float32", progress=False
        )
    stored = Checkpoint(tmp_path / "b").read("model.layers.2.mlp.down_proj.weight")
    assert stored.dtype == torch.bfloat16  # the model directory keeps the checkpoint's dtype


# -- found by an outside tester ----------------------------------------------------------------------------------
def test_a_single_file_beside_shards_is_what_is_read_and_written(workdir: Path) -> None:
    """transformers loads model.safetensors when both it and an index are there: streaming must use it too."""
    make_model("gpt_neox", seed=1).save_pretrained(workdir / "single")
    (workdir / "base" / "model.safetensors").write_bytes((workdir / "single" / "model.safetensors").read_bytes())
    assert unlearn(workdir, "out") == 0
    assert (workdir / "out" / "model.safetensors").is_file() and not (workdir / "out" / INDEX).exists()
    written = Checkpoint(workdir / "out")
    single = Checkpoint(workdir / "single")
    untouched = "gpt_neox.layers.3.mlp.dense_4h_to_h.weight"
    assert torch.equal(written.read(untouched), single.read(untouched))


def test_a_truncated_shard_is_refused(workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert unlearn(workdir, "out") == 0
    shards = sorted((workdir / "base").glob("model-*.safetensors"))
    with shards[-1].open("r+b") as f:
        f.truncate(shards[-1].stat().st_size - 100)
    delta = str(workdir / "out" / "rmu_delta.safetensors")
    assert main(["apply-delta", "--delta", delta, "--base", str(workdir / "base"), "--out", str(tmp_path / "x")]) == 2
    assert "truncated" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_flat_lists_of_documents_are_refused(tokenizer: object) -> None:
    with pytest.raises(ru.ConfigError, match="list of corpora"):
        rmu.unlearn(make_model("llama"), tokenizer, FORGET, [RETAIN], CONFIG, progress=False)  # type: ignore[arg-type]


def test_float16_training_warns(tokenizer: object) -> None:
    with pytest.warns(UserWarning, match="float16"):
        config = dataclasses.replace(CONFIG, max_batches=1)
        rmu.unlearn(make_model("llama").half(), tokenizer, [FORGET], [RETAIN], config, progress=False)


def test_reference_mode_with_dropout_is_reproducible(tokenizer: object) -> None:
    runs = [run_toyish(make_model("gpt2"), tokenizer, reference_mode=True)[0] for _ in range(2)]
    assert runs[0] == runs[1]


def test_a_failed_run_leaves_no_empty_step_log(workdir: Path) -> None:
    log = workdir / "log.jsonl"
    assert unlearn(workdir, "out", "--steering-coeff", "1,2", "--log-jsonl", str(log)) == 2  # one forget corpus
    assert not Path(str(log) + ".partial").exists()
    Path(str(log) + ".partial").write_text('{"step": 0, "forget_loss": 1.0}\n')  # a failed run's own log
    assert unlearn(workdir, "out", "--log-jsonl", str(log)) == 2  # kept unless --overwrite
    assert unlearn(workdir, "out", "--log-jsonl", str(log), "--overwrite") == 0
    assert log.is_file() and not Path(str(log) + ".partial").exists()


def test_a_config_declaring_more_layers_than_the_weights_is_refused(tmp_path: Path) -> None:
    base = saved(tmp_path, "llama")
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "num_hidden_layers": N_LAYERS + 2}))
    from repe_unlearn._loading import load_causal_lm

    for first_layers in (N_LAYERS + 1, None):  # layers the weights lack: in the partial load and the full one
        with pytest.raises(ru.ConfigError, match="holds no values"):
            load_causal_lm(str(base), first_layers=first_layers)
    assert load_causal_lm(str(base), first_layers=2) is not None  # the first two layers are all there


@pytest.mark.parametrize("method", ["rmu-flat", "adv-rmu"])
def test_unlearn_from_pretrained_runs_each_kind_of_method(tmp_path: Path, tokenizer: object, method: str) -> None:
    """rmu-flat streams from layers 0..ℓ as RMU does; an adversarial method needs the logits, so it loads the
    whole model: both equal the same method run on the full model loaded by hand."""
    base = saved(tmp_path, "llama", shards=True)
    tokenizer.save_pretrained(base)  # type: ignore[attr-defined]
    extra = {"adv_steps": 2, "adv_model_steps": 1} if method == "adv-rmu" else {}
    config = dataclasses.replace(CONFIG, method=method, **extra)  # type: ignore[arg-type]
    result = rmu.unlearn_from_pretrained(base, [FORGET], [RETAIN], config, out=tmp_path / "out", progress=False)
    full = tf.AutoModelForCausalLM.from_pretrained(base).eval()
    expected = rmu.unlearn(full, tokenizer, [FORGET], [RETAIN], config, progress=False)
    assert [h.forget_loss for h in result.history] == pytest.approx([h.forget_loss for h in expected.history])
    summary = json.loads((tmp_path / "out" / "rmu_config.json").read_text())
    assert summary["config"]["method"] == method
    assert ("layers_loaded" in summary) == (method == "rmu-flat")  # only the streamed run records a partial load
    written = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    for name, p in written.named_parameters():
        torch.testing.assert_close(p, dict(full.named_parameters())[name], rtol=1e-5, atol=1e-7)
