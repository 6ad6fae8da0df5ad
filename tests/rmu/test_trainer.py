import copy

import pytest
import torch
from conftest import FORGET, RETAIN, make_model
from torch import Tensor, nn

import repe_unlearn as ru
from repe_unlearn import rmu
from repe_unlearn._hooks import capture_calls


def config(**overrides: object) -> rmu.RMUConfig:
    base: dict[str, object] = {
        "layer": 2,
        "steering_coeff": (5.0,),
        "alpha": (10.0,),
        "lr": 1e-2,
        "batch_size": 4,
        "max_batches": 6,
        "max_length": 16,
    }
    return rmu.RMUConfig(**{**base, **overrides})


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_only_the_selected_tensors_change(arch: str, tokenizer: object) -> None:
    model = make_model(arch)
    before = snapshot(model)
    result = rmu.unlearn(model, tokenizer, [FORGET], [RETAIN], config(), progress=False)
    after = snapshot(model)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == set(result.parameter_names)
    assert len(result.parameter_names) == 3 and all(".mlp." in n for n in result.parameter_names)
    assert all(p.requires_grad for p in model.parameters())  # flags restored


def test_retain_loss_is_exactly_zero_before_the_first_update(arch: str, tokenizer: object) -> None:
    """The frozen replay (shared prefix + frozen copies) reproduces the untouched model bit for bit."""
    model = make_model(arch)
    result = rmu.unlearn(model, tokenizer, [FORGET], [RETAIN], config(max_batches=1), progress=False)
    assert result.history[0].retain_loss == 0.0


def test_frozen_replay_equals_a_full_frozen_copy(tokenizer: object) -> None:
    model = make_model("gemma2")  # sliding-window layers get their own mask: replay must reuse each layer's
    frozen = copy.deepcopy(model)
    rmu.unlearn(model, tokenizer, [FORGET], [RETAIN], config(), progress=False)
    batch = next(ru.tokenize_batches(tokenizer, RETAIN[:4], 4))
    handle, calls = capture_calls(model, range(0, 3))
    with handle:
        ru.collect(model, batch, 2)
    replay = rmu.trainer._FrozenReplay(model, [], 0, 2)
    replay.frozen = {i: {"mlp.down_proj.weight": ru.mlp_down_proj(frozen, i).weight.detach()} for i in range(3)}
    with torch.no_grad():
        assert torch.equal(replay(calls, batch["attention_mask"]), ru.collect(frozen, batch, 2)[2])


def test_forget_loss_falls_and_retain_stays_small(tokenizer: object) -> None:
    model = make_model("llama")
    cfg = config(max_batches=20, lr=0.1)
    result = rmu.unlearn(model, tokenizer, [FORGET * 4], [RETAIN * 4], cfg, progress=False)
    first, last = result.history[0], result.history[-1]
    assert last.forget_loss < 0.25 * first.forget_loss
    assert max(log.retain_loss for log in result.history) < 0.1 * first.forget_loss
    assert last.forget_norm > first.forget_norm


def test_padding_is_masked_by_default(tokenizer: object) -> None:
    acts = torch.randn(2, 5, 4)
    target = torch.randn(4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    expected = torch.cat([(acts[0, :3] - target).square().flatten(), (acts[1] - target).square().flatten()]).mean()
    torch.testing.assert_close(rmu.masked_mse(acts, target, mask), expected)
    assert torch.equal(rmu.masked_mse(acts, target, None), (acts - target).square().mean())


def test_control_vectors_are_deterministic_per_seed() -> None:
    a, b, c = (rmu.random_directions(2, 32, seed) for seed in (42, 42, 43))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.allclose(a.norm(dim=1), torch.ones(2)) and bool((a >= 0).all())


def test_adaptive_coefficient_follows_the_measured_norm(tokenizer: object) -> None:
    model = make_model("llama")
    batch = next(ru.tokenize_batches(tokenizer, FORGET[:4], 4, max_length=16))
    acts = ru.collect(model, batch, 2)[2]
    norm = float(acts.norm(dim=-1)[batch["attention_mask"].bool()].mean())
    result = rmu.unlearn(
        model, tokenizer, [FORGET], [RETAIN], config(adaptive_coeff=3.0, max_batches=1), progress=False
    )
    assert result.frozen_norms[0] == pytest.approx(norm, rel=1e-5)
    assert result.coefficients[0] == pytest.approx(3.0 * norm, rel=1e-5)


def test_a_control_vector_can_be_the_target(tokenizer: object) -> None:
    model = make_model("llama")
    direction = torch.zeros(32)
    direction[3] = 2.0
    steer = ru.ControlVector({2: direction})
    result = rmu.unlearn(
        model, tokenizer, [FORGET], [RETAIN], config(max_batches=2), control_vectors=[steer], progress=False
    )
    assert torch.equal(result.directions[0], direction / 2.0)


def test_schedule_interleaves_topics() -> None:
    assert rmu.schedule(2, [3, 5, 4, 9], 10) == [(0, 0), (1, 0), (0, 1)]
    assert rmu.schedule(1, [10, 10], 4) == [(0, 0), (0, 1), (0, 2), (0, 3)]


def test_nan_stops_and_restores_the_model(tokenizer: object) -> None:
    model = make_model("llama")
    before = snapshot(model)
    with pytest.raises(ru.TrainingError, match=r"loss became (nan|inf) at step [1-9]"):
        rmu.unlearn(model, tokenizer, [FORGET], [RETAIN], config(lr=1e20), progress=False)
    after = snapshot(model)
    assert all(torch.equal(before[n], after[n]) for n in before)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"update_layers": (1, 3)}, r"update layers \[3\] are invalid.*steered layer 2"),
        ({"lr": 0.0}, "lr must be a positive number"),
        ({"steering_coeff": (1.0, 2.0, 3.0)}, "3 values of steering_coeff for 1 forget corpora"),
        ({"layer": 9, "update_layers": (8, 9)}, "layer 9 is out of range"),
        ({"param_template": "model.layers.{layer}.mlp.nope.weight"}, "no parameter 'model.layers.0.mlp.nope.weight'"),
        ({"min_len": 1000}, "forget corpus 0 has no text of at least 1000 characters"),
    ],
)
def test_bad_configuration(tokenizer: object, overrides: dict[str, object], message: str) -> None:
    with pytest.raises((ru.ConfigError, ru.DataError), match=message):
        rmu.unlearn(make_model("llama"), tokenizer, [FORGET], [RETAIN], config(**overrides), progress=False)


def test_layers_counted_from_the_last_train_what_the_same_layers_counted_from_the_first_do(
    tokenizer: object,
) -> None:
    """layer -2 on a 4-layer model is layer 2: the same tensors, the same updates, and the result records 2."""
    runs = {}
    for layer, update in ((2, (0, 1, 2)), (-2, (-4, 1, -2))):
        model = make_model("llama")
        result = rmu.unlearn(
            model, tokenizer, [FORGET], [RETAIN], config(layer=layer, update_layers=update), progress=False
        )
        runs[layer] = (snapshot(model), result)
    (absolute, first), (negative, second) = runs[2], runs[-2]
    assert second.config.layer == 2 and second.config.update_layers == (0, 1, 2) and second.config.is_resolved
    assert second.parameter_names == first.parameter_names and len(first.parameter_names) == 3
    assert all(torch.equal(absolute[name], negative[name]) for name in absolute)
    assert [s.forget_loss for s in second.history] == [s.forget_loss for s in first.history]
    assert not torch.equal(absolute[first.parameter_names[0]], snapshot(make_model("llama"))[first.parameter_names[0]])


def test_layers_counted_from_the_last_are_checked() -> None:
    with pytest.raises(ru.ConfigError, match=r"layer -5 is out of range: the model has 4 layers \(valid: -4..3\)"):
        config(layer=-5).resolved(4)
    with pytest.raises(ru.ConfigError, match=r"update layer 4 is out of range"):
        config(layer=-1, update_layers=(4,)).resolved(4)
    with pytest.raises(ru.ConfigError, match=r"update layers \[3\] are invalid.*layer 2 .*-2 is 2, -1 is 3\)$"):
        config(layer=-2, update_layers=(-1,)).resolved(4)  # checked on the model, named both ways
    with pytest.raises(ru.ConfigError, match=r"^layer -9 is out of range"):  # the culprit, not the update layers
        config(layer=-9, update_layers=(-4, -3, -2)).resolved(4)
    with pytest.raises(ru.ConfigError, match=r"the model has 1 layer \(valid: -1..0\)"):
        config(layer=-2).resolved(1)
    with pytest.raises(ru.ConfigError, match=r"update layers \[3\] are invalid"):  # caught once resolved
        config(layer=-2, update_layers=(3,)).resolved(4)
    with pytest.raises(ru.ConfigError, match="adv_layer 2 must lie below the steered layer 2"):
        config(layer=-2, method="rmu-lat", reference_mode=False, adv_layer=2).resolved(4)
    with pytest.raises(ru.ConfigError, match=r"resolve it for a model first: config.resolved\(n_layers\)"):
        _ = config(layer=-2).layers_to_update
    assert config(layer=-2).resolved(4).layers_to_update == (0, 1, 2)
    assert config(layer=-1, method="rmu-lat", reference_mode=False).resolved(6).adversary_layer == 4


def test_presets_and_overrides() -> None:
    zephyr = rmu.preset("wmdp-zephyr")
    assert (zephyr.layer, zephyr.layers_to_update, zephyr.steering_coeff, zephyr.alpha) == (
        7,
        (5, 6, 7),
        (6.5,),
        (1200.0,),
    )
    assert zephyr.reference_mode and zephyr.max_batches == 150
    assert rmu.preset("wmdp-zephyr", lr=1e-4).lr == 1e-4
    with pytest.raises(ru.ConfigError, match="unknown preset 'nope'"):
        rmu.preset("nope")
