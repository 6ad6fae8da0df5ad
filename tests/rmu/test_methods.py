"""RMU's robust variants: rmu-lat, adv-rmu (a latent adversary) and rmu-flat (the flat target)."""

import json
import math
from pathlib import Path

import pytest
import test_cli_unlearn
import torch
from conftest import FORGET, RETAIN, make_model
from plain_rmu_digests import CASES, digest, inputs
from test_trainer import config as small_config
from torch import Tensor, nn
from transformers import AutoModelForCausalLM

import repe_unlearn as ru
from repe_unlearn import rmu
from repe_unlearn._hooks import active_hooks
from repe_unlearn.cli import main
from repe_unlearn.errors import ConfigError
from repe_unlearn.rmu import adversary as adv_module
from repe_unlearn.rmu import trainer as trainer_module
from repe_unlearn.rmu.adversary import LatentAdversary, away_loss, fit_adversary, toward_loss

# recorded by tests/rmu/plain_rmu_digests.py on the code before any other method existed (commit c89ce9c), per
# fingerprint of the inputs the installed transformers/tokenizers make (case -> {inputs: digests}). First recorded
# 2026-11-29; the releases installed on 2026-12-05 make other initial weights or tokens, so that day's digests
# were recorded again from a checkout of c89ce9c (today's code gave the same bytes). The float kernels differ by
# CPU, so one input can give one digest per kind of CPU: the second of each pair was recorded from c89ce9c on
# 2026-12-07 on a CPU whose torch kernels are AVX2 (`torch.backends.cpu.get_cpu_capability()`), where the first
# does not come out (today's code gave the same bytes there too); the third of the llama cases, recorded the same
# way later that day on an AMD EPYC whose torch kernels are AVX512 (there gpt2's came out as the second).
BEFORE: dict[str, dict[str, tuple[str, ...]]] = {
    "llama, one epoch": {
        "5fbee88897107a352dba5dffb2a1ebe31c8c80a4122c67e03b3cd5979236acfc": (
            "665e0d6212f26563e06d02d6ceacaba92d3a07150d15abbec954ccb34a6f0da3",
            "ddbed75d586f82bcd7ea410216aa7687b1d056f72739c905cd20ab3298865f61",
            "e3fdcfb4f1e967d0816fc07cdbcefbf3ec4ee5baed5fa2011f72ae4aff42da24",
        ),
    },
    "llama, 3 epochs from the epoch cache, adaptive c": {
        "5fbee88897107a352dba5dffb2a1ebe31c8c80a4122c67e03b3cd5979236acfc": (
            "979dce3d6044ab993b1d0cf73ccbdc85ccb87964dc062795d3a1765bd8755628",
            "f5222fe2532b01d11913b996fe8ac36170a437edacb96db7d744f47cda6b751e",
            "f96f6abc7209d25c99792508076769e4db12582a5ca18910d69930d2dfbba30e",
        ),
    },
    "gpt2, reference mode": {
        "d7433015b039bb8e020f56f7934b3e65d3d3dbf3f55c93422f0bc84e2b53e1b4": (
            "9b0157be6a36649ed436075f312be2b4a8ef8452e44292486ebfe63674593929",
            "43edf3bdc85464472e524dae6bfccd37d02401f2bd30e67c7f3455c420417753",
        ),
    },
}
METHODS = ("rmu-lat", "adv-rmu", "rmu-flat")


def config(method: str = "rmu", **overrides: object) -> rmu.RMUConfig:
    """test_trainer's small config, 3 batches, for ``method`` (adversaries kept small)."""
    adversary: dict[str, object] = {"adv_steps": 3, "adv_model_steps": 2, "adv_epsilon": 1.0}
    extra = adversary if method in ("rmu-lat", "adv-rmu") else {}
    return small_config(**{"max_batches": 3, "method": method, **extra, **overrides})


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def batch_of(tokenizer: object, texts: list[str]) -> dict[str, Tensor]:
    return next(ru.tokenize_batches(tokenizer, texts, len(texts), max_length=16))


def recorded(case: str, tokenizer: object) -> tuple[str, ...]:
    """The digest c89ce9c gave on the inputs this environment makes; a skip that says so where none was recorded."""
    fingerprint = inputs(case, tokenizer)
    if fingerprint not in BEFORE[case]:
        pytest.skip(
            f"{case}: no digest recorded for inputs {fingerprint[:12]} (other transformers/tokenizers releases); "
            "record one by running tests/rmu/plain_rmu_digests.py on a checkout of c89ce9c"
        )
    return BEFORE[case][fingerprint]


@pytest.mark.parametrize("case", list(CASES))
def test_plain_rmu_is_bit_identical_to_before_the_methods(case: str, tokenizer: object) -> None:
    assert digest(case, tokenizer) in recorded(case, tokenizer), (  # one per kind of CPU, all from c89ce9c
        f"no digest recorded for {case!r} matches on this CPU ({torch.backends.cpu.get_cpu_capability()} kernels): "
        "plain RMU's bytes changed, or this kind of CPU needs its digest recorded from a checkout of c89ce9c "
        "(tests/rmu/plain_rmu_digests.py)"
    )


def test_the_digest_sees_a_one_ulp_change(tokenizer: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bit-identity check can fail: nudging the learning rate by one part in 10^7 changes the digest."""
    nudged = {**CASES["llama, one epoch"], "config": {"lr": 1e-2 * (1 + 1e-7)}}
    monkeypatch.setitem(CASES, "nudged", nudged)
    digests = recorded("llama, one epoch", tokenizer)
    assert digest("llama, one epoch", tokenizer) in digests and digest("nudged", tokenizer) not in digests


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_each_method_changes_only_the_selected_tensors(method: str, arch: str, tokenizer: object) -> None:
    model = make_model(arch)
    before = snapshot(model)
    result = rmu.unlearn(model, tokenizer, [FORGET], [RETAIN], config(method), progress=False)
    changed = {name for name, p in model.named_parameters() if not torch.equal(before[name], p)}
    assert changed == set(result.parameter_names) and len(changed) == 3
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    assert not active_hooks(model)
    per_batch = 2 if method != "rmu-flat" else 1
    assert len(result.history) == 3 * per_batch
    if method != "rmu-flat":
        assert all(log.adversary_loss is not None and math.isfinite(log.adversary_loss) for log in result.history)


def test_the_per_token_perturbation_stays_in_its_ball_on_real_tokens_only(tokenizer: object) -> None:
    model = make_model("llama")
    texts = [FORGET[0][:12], FORGET[1] + " " + FORGET[2]]  # different lengths: padding
    forget = batch_of(tokenizer, texts)
    retain = batch_of(tokenizer, RETAIN[:2])
    cfg = config("rmu-lat", adv_epsilon=0.5, adv_lr=1.0, adv_steps=5)
    adversary, losses = fit_adversary(model, forget, retain, cfg)
    norms = adversary.norms()
    real = forget["attention_mask"].bool()
    assert (~real).any()  # the batch has padding
    assert float(norms[real].max()) == pytest.approx(0.5, rel=1e-5)  # the bound binds (lr 1 would exceed it)
    assert float(norms.max()) <= 0.5 * (1 + 1e-6)
    assert float(norms[~real].max()) == 0.0
    assert losses[-1] < losses[0]  # it found a perturbation that makes the forget text likelier


def test_the_shared_perturbation_is_one_vector_within_epsilon(tokenizer: object) -> None:
    model = make_model("llama")
    forget = batch_of(tokenizer, FORGET[:4])
    adversary, losses = fit_adversary(model, forget, None, config("adv-rmu", adv_epsilon=0.3, adv_lr=1.0))
    assert adversary.delta.shape == (ru.d_model(model),)
    assert float(adversary.norms()) == pytest.approx(0.3, rel=1e-5)
    assert losses[-1] < losses[0]


def test_project_scales_long_perturbations_onto_the_sphere_and_leaves_short_ones(llama: nn.Module) -> None:
    adversary = LatentAdversary(llama, 1, 2.0, shape=(1, 3, ru.d_model(llama)))
    with torch.no_grad():
        adversary.delta.zero_()
        adversary.delta[0, 0, 0] = 5.0
        adversary.delta[0, 1, 1] = 1.5
    adversary.project()
    assert adversary.norms()[0].tolist() == pytest.approx([2.0, 1.5, 0.0])


def test_the_adversary_acts_only_inside_its_with_block(tokenizer: object) -> None:
    model = make_model("llama")
    batch = batch_of(tokenizer, FORGET[:2])
    adversary = LatentAdversary(model, 1, 1.0, shape=(ru.d_model(model),))
    with torch.no_grad():
        adversary.delta.fill_(0.1)
        plain = model(**batch).logits
        with adversary.intervention():
            perturbed = model(**batch).logits
            hidden = model(**batch, output_hidden_states=True).hidden_states
        again = model(**batch).logits
    assert not torch.allclose(plain, perturbed) and torch.equal(plain, again)
    clean = model(**batch, output_hidden_states=True).hidden_states
    # resid_post of layer 1 is hidden_states[2]: exactly the clean one plus δ
    assert torch.allclose(hidden[2], clean[2] + 0.1, atol=1e-6)


def test_hooks_are_gone_and_weights_restored_after_an_exception_inside_the_adversary(
    tokenizer: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_model("llama")
    before = snapshot(model)
    calls = {"n": 0}
    real = adv_module.toward_loss

    def failing(m: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        calls["n"] += 1
        if calls["n"] == 5:  # the second adversary, after an update was made
            assert active_hooks(m)  # the perturbation is on while its loss runs
            raise RuntimeError("boom")
        return real(m, batch)

    monkeypatch.setattr(adv_module, "toward_loss", failing)
    with pytest.raises(RuntimeError, match="boom"):
        rmu.unlearn(model, tokenizer, [FORGET], [RETAIN], config("rmu-lat"), progress=False)
    assert not active_hooks(model)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_hooks_are_gone_after_an_exception_in_the_update_under_the_adversary(
    tokenizer: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_model("llama")
    real = trainer_module._updated_h
    seen = []

    def failing(*args: object, **kwargs: object) -> object:
        seen.append(bool(active_hooks(model)))
        if len(seen) == 3:
            raise RuntimeError("boom")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(trainer_module, "_updated_h", failing)
    with pytest.raises(RuntimeError, match="boom"):
        rmu.unlearn(model, tokenizer, [FORGET], [RETAIN], config("adv-rmu"), progress=False)
    assert seen[0] and not seen[1]  # the forget pass ran under the adversary, the retain pass without it
    assert not active_hooks(model)


def test_the_flat_forget_loss_equals_its_formula(tokenizer: object) -> None:
    model = make_model("llama")
    cfg = config("rmu-flat", flat_weight=7.0)
    batch = batch_of(tokenizer, FORGET[:3])
    names = rmu.parameter_names(model, cfg)
    replay = trainer_module._FrozenReplay(model, names, 0, 2)
    torch.manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(ru.d_model(model)), dim=0)
    target = 5.0 * u + torch.randn(ru.d_model(model))
    with torch.no_grad():
        loss, h, _ = trainer_module._forget_loss(model, batch, replay, target, cfg, direction=u)
        mask = batch["attention_mask"].bool()
        err = (h - target)[mask]
        off = err - (err @ u)[:, None] * u
        expected = err.square().mean() + 7.0 * off.square().mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    with torch.no_grad():
        plain, _, _ = trainer_module._forget_loss(model, batch, replay, target, config(), direction=u)
    assert float(plain) == pytest.approx(float(err.square().mean()), rel=1e-5)


def test_rmu_flat_aims_at_c_u_plus_the_mean_forget_activation_off_u(tokenizer: object) -> None:
    """With a huge flat weight the forget activations' part off u moves towards the frozen mean's."""
    model = make_model("llama")
    frozen = make_model("llama")
    cfg = config("rmu-flat", flat_weight=1000.0, max_batches=5, epochs=30, lr=3e-2, alpha=(0.0,))
    result = rmu.unlearn(model, tokenizer, [FORGET], [RETAIN], cfg, progress=False)
    u = result.directions[0]
    batch = batch_of(tokenizer, FORGET[:4])
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        mean = ru.collect(frozen, batch, 2)[2][mask].mean(0)
        before = ru.collect(frozen, batch, 2)[2][mask]
        after = ru.collect(model, batch, 2)[2][mask]
    goal = mean - (mean @ u) * u

    def off_error(h: Tensor) -> float:
        e = h - goal
        return float((e - (e @ u)[:, None] * u).norm(dim=-1).mean())

    assert off_error(after) < 0.5 * off_error(before)


def test_config_refuses_what_cannot_run() -> None:
    with pytest.raises(ConfigError, match="reference mode reproduces the published RMU loop"):
        config("rmu-lat", reference_mode=True)
    with pytest.raises(ConfigError, match="adv_layer 2 must lie below"):
        config("rmu-lat", adv_layer=2)
    with pytest.raises(ConfigError, match="ℓ = 0 has none"):
        config("adv-rmu", layer=0, update_layers=(0,))
    with pytest.raises(ConfigError, match="adv_epsilon"):
        config("rmu-lat", adv_epsilon=0.0)
    with pytest.raises(ConfigError, match="adv_model_steps"):
        config("rmu-lat", adv_model_steps=0)
    assert config("rmu-lat").adversary_layer == 1
    assert config("rmu-lat").to_dict()["adv_layer"] == 1  # what runs is recorded, not None
    with pytest.raises(ConfigError, match="adv_epsilon applies to rmu-lat and adv-rmu only"):
        config("rmu", adv_epsilon=3.0)  # a flag for another method would be ignored: refused
    with pytest.raises(ConfigError, match="flat_weight applies to rmu-flat only"):
        config("rmu-lat", flat_weight=7.0)
    with pytest.raises(ConfigError, match="adv_away applies to rmu-lat only"):
        config("adv-rmu", adv_away=0.5)
    with pytest.raises(ConfigError, match="beyond what float32 holds"):
        config("rmu-lat", adv_lr=1e39)
    with pytest.raises(ConfigError, match="--no-reference-mode"):
        rmu.preset("wmdp-zephyr", method="rmu-flat")


def test_presets_have_a_block_per_method() -> None:
    assert rmu.preset("toy") == rmu.RMUConfig(**rmu.PRESETS["toy"])  # plain RMU: unchanged
    flat = rmu.preset("toy", method="rmu-flat")
    assert flat.flat_weight == 200.0 and flat.lr == 5e-3
    # every layer from 0 to the steered one, on the shipped model (6 layers) and on `toy pretrain`'s (4)
    assert flat.resolved(6).layers_to_update == (0, 1, 2, 3, 4) and flat.resolved(6).layer == 4
    assert flat.resolved(4).layers_to_update == (0, 1, 2) and flat.resolved(4).layer == 2
    toy = rmu.preset("toy")
    assert (toy.resolved(6).layer, toy.resolved(6).layers_to_update) == (4, (2, 3, 4))  # the demo's, as before
    assert (toy.resolved(4).layer, toy.resolved(4).layers_to_update) == (2, (0, 1, 2))
    lat = rmu.preset("toy", method="rmu-lat")
    # the same number of updates as plain RMU: 10 epochs x 4 updates per batch against 40 epochs x 1
    assert lat.epochs * lat.adv_model_steps == rmu.preset("toy").epochs
    assert rmu.preset("toy", method="rmu-flat", flat_weight=3.0).flat_weight == 3.0  # explicit wins
    zephyr = rmu.preset("wmdp-zephyr", method="rmu-lat")
    assert not zephyr.reference_mode and zephyr.adversary_layer == 7 and zephyr.layer == 8


def test_the_away_loss_is_harmbenchs_log_one_minus_p(tokenizer: object) -> None:
    model = make_model("llama")
    batch = batch_of(tokenizer, RETAIN[:3])
    with torch.no_grad():
        got = away_loss(model, batch, threshold=-1e9)
        logits = model(**batch).logits[:, :-1].float()
        labels = batch["input_ids"][:, 1:]
        keep = batch["attention_mask"][:, 1:].bool()
        p = logits.softmax(-1).gather(-1, labels[..., None])[..., 0][keep]
        assert float(got) == pytest.approx(float(-torch.log1p(-p).mean()), rel=1e-4)
        # tokens already unlikely (log p below the threshold) count zero
        assert float(away_loss(model, batch, threshold=0.0)) == 0.0
        ce = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
        assert float(toward_loss(model, batch)) == pytest.approx(float(ce), rel=1e-5)


workdir = test_cli_unlearn.workdir  # the fixture: a tiny llama, its tokenizer, a forget and a retain file


def cli(workdir: Path, *extra: str) -> int:
    """test_cli_unlearn's small run, on 2 batches."""
    return test_cli_unlearn.run(workdir, "--max-batches", "2", *extra)


@pytest.mark.parametrize("method", METHODS)
def test_the_cli_runs_each_method_and_records_it(
    method: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = workdir / "out"
    log = workdir / "log.jsonl"
    fewer = ["--adv-steps", "2"] if method != "rmu-flat" else []
    assert cli(workdir, "--method", method, *fewer, "--out", str(out), "--log-jsonl", str(log)) == 0
    printed = capsys.readouterr().out
    steps = 2 * (4 if method != "rmu-flat" else 1)  # adv_model_steps defaults to 4 (published)
    assert f"{method}: {steps} steps" in printed
    summary = json.loads((out / "rmu_config.json").read_text())
    adversary = summary["config"]["adv_layer"]  # the layer that ran (ℓ-1 by default), printed where there is one
    assert (f"adversary at layer {adversary} (L2 bound 2)" in printed) == (method != "rmu-flat"), printed
    assert (adversary is None) == (method == "rmu-flat")
    assert summary["config"]["method"] == method and summary["steps"] == steps
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == steps and (lines[0]["adversary_loss"] is None) == (method == "rmu-flat")
    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert ru.n_layers(loaded) == ru.n_layers(make_model("llama"))  # every method writes the whole model


def test_the_cli_refuses_an_unknown_method(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(workdir, "--method", "rmu-xyz", "--out", str(workdir / "out")) == 2
    assert "invalid choice: 'rmu-xyz'" in capsys.readouterr().err


def test_the_cli_explains_a_method_that_reference_mode_cannot_run(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["unlearn", "--model", str(workdir / "base"), "--forget", str(workdir / "forget.jsonl"), "--retain",
         str(workdir / "retain.txt"), "--preset", "wmdp-zephyr", "--method", "rmu-flat", "--out",
         str(workdir / "out")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "--no-reference-mode" in err and "Traceback" not in err
    assert not (workdir / "out").exists()


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--adv-epsilon", "3"], "--adv-epsilon applies to rmu-lat and adv-rmu only"),
        (["--adv-epsilon", "2"], "--adv-epsilon applies to rmu-lat and adv-rmu only"),  # the default, given: still
        (["--method", "rmu-lat", "--flat-weight", "200"], "--flat-weight applies to rmu-flat only"),
        (["--method", "adv-rmu", "--adv-away", "1"], "--adv-away applies to rmu-lat only"),
    ],
)
def test_the_cli_refuses_a_flag_the_method_would_ignore(
    flags: list[str], named: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(workdir, *flags, "--out", str(workdir / "out")) != 0
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert not (workdir / "out").exists()
