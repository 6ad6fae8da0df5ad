from pathlib import Path

import pytest
import torch
from conftest import N_LAYERS
from safetensors.torch import save_file
from torch import Tensor, nn

import repe_unlearn as ru


def random_vector(layers: list[int], seed: int = 0) -> ru.ControlVector:
    generator = torch.Generator().manual_seed(seed)
    return ru.ControlVector({layer: torch.randn(32, generator=generator) for layer in layers})


def test_steering_equals_adding_the_vector_by_hand(model: nn.Module, batch: dict[str, Tensor]) -> None:
    vector = random_vector([1, 2])
    with torch.no_grad():
        with ru.record(model, layers=[1]) as plain:
            model(**batch)
        with vector.apply(model, coeff=2.5), ru.record(model, layers=[1]) as steered:
            steered_logits = model(**batch).logits
        assert torch.equal(steered[1], plain[1] + 2.5 * vector[1])

        layers = ru.decoder_layers(model)
        by_hand = [layers[k].register_forward_hook(lambda m, a, o, k=k: o + 2.5 * vector[k]) for k in (1, 2)]
        hand_logits = model(**batch).logits
        for handle in by_hand:
            handle.remove()
    assert torch.equal(steered_logits, hand_logits)


def test_outputs_are_bit_identical_after_the_context(model: nn.Module, batch: dict[str, Tensor]) -> None:
    with torch.no_grad():
        before = model(**batch).logits
        with random_vector([0, 3]).apply(model, 4.0):
            assert not torch.equal(model(**batch).logits, before)
        assert torch.equal(model(**batch).logits, before)


def test_only_non_pad_positions_are_steered(llama: nn.Module, batch: dict[str, Tensor]) -> None:
    vector = random_vector([0])
    with torch.no_grad(), ru.record(llama, layers=[0]) as plain:
        llama(**batch)
    with torch.no_grad(), vector.apply(llama, only_non_pad=True), ru.record(llama, layers=[0]) as steered:
        llama(**batch)
    real = batch["attention_mask"].bool()
    assert torch.equal(steered[0][real], (plain[0] + vector[0])[real])
    assert torch.equal(steered[0][~real], plain[0][~real])


def test_algebra() -> None:
    a, b = random_vector([1, 2], seed=1), random_vector([2, 3], seed=2)
    total = a + b
    assert total.layers == [1, 2, 3]
    assert torch.equal(total[2], a[2] + b[2]) and torch.equal(total[1], a[1]) and torch.equal(total[3], b[3])
    assert torch.equal((a - b)[3], -b[3])
    assert torch.equal((2 * a)[1], a[1] * 2) and torch.equal((a * 2)[1], a[1] * 2)
    assert torch.equal((a / 4)[2], a[2] * 0.25) and torch.equal((-a)[1], -a[1])
    assert all(torch.equal((a + b)[k], (b + a)[k]) for k in (1, 2, 3))
    assert all(abs(n - 1.0) < 1e-6 for n in a.normalized().norms().values())


def test_combining_mismatched_vectors_fails() -> None:
    with pytest.raises(ru.ShapeError, match=r"d_model 32.*d_model 8"):
        random_vector([1]) + ru.ControlVector({1: torch.ones(8)})


def test_size_not_d_model_is_rejected_before_any_hook(llama: nn.Module) -> None:
    with pytest.raises(ru.ShapeError, match="size 16 but the model's d_model is 32"):
        ru.ControlVector({1: torch.ones(16)}).apply(llama)
    with pytest.raises(ru.LayerNotFoundError, match="layer 7 is out of range"):
        ru.ControlVector({7: torch.ones(32)}).apply(llama)
    assert ru.active_hooks(llama) == []


@pytest.mark.parametrize(
    ("directions", "message"),
    [
        ({}, "at least one layer"),
        ({0: torch.ones(2, 32)}, "1-D float tensor"),
        ({0: torch.ones(32, dtype=torch.long)}, "1-D float"),
    ],
)
def test_bad_directions(directions: dict[int, Tensor], message: str) -> None:
    with pytest.raises((ru.ShapeError, ru.ConfigError), match=message):
        ru.ControlVector(directions)


def test_negative_layers_resolve_against_the_model(llama: nn.Module, batch: dict[str, Tensor]) -> None:
    vector = ru.ControlVector({-1: torch.ones(32)})
    with torch.no_grad(), ru.record(llama, layers=[N_LAYERS - 1]) as plain:
        llama(**batch)
    with torch.no_grad(), vector.apply(llama), ru.record(llama, layers=[N_LAYERS - 1]) as steered:
        llama(**batch)
    assert torch.equal(steered[N_LAYERS - 1], plain[N_LAYERS - 1] + 1)


def test_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    vector = ru.ControlVector({0: torch.randn(32), 5: torch.randn(32)}, point="mlp_out", metadata={"source": "test"})
    vector.save(tmp_path / "v.safetensors")
    loaded = ru.ControlVector.load(tmp_path / "v.safetensors")
    assert loaded.layers == [0, 5] and loaded.point == "mlp_out" and loaded.metadata == {"source": "test"}
    assert all(torch.equal(loaded[k], vector[k]) for k in (0, 5))
    with pytest.raises(FileExistsError):
        vector.save(tmp_path / "v.safetensors")
    vector.save(tmp_path / "v.safetensors", overwrite=True)


def test_files_that_are_not_vectors(tmp_path: Path, llama: nn.Module, batch: dict[str, Tensor]) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ru.FormatError, match="not a valid safetensors file"):
        ru.ControlVector.load(junk)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.ones(3)}, str(foreign))
    with pytest.raises(ru.FormatError, match="not written by repe_unlearn"):
        ru.ControlVector.load(foreign)
    cache_file = tmp_path / "cache.safetensors"
    ru.collect(llama, batch, layers=[0]).save(cache_file)
    with pytest.raises(ru.FormatError, match="holds a 'activation_cache', expected a 'control_vector'"):
        ru.ControlVector.load(cache_file)
    with pytest.raises(FileNotFoundError):
        ru.ControlVector.load(tmp_path / "missing.safetensors")


def test_ablation_projects_the_direction_out(model: nn.Module, batch: dict[str, Tensor]) -> None:
    vector = random_vector([1, 2])
    with torch.no_grad(), ru.record(model, layers=[1]) as plain:
        model(**batch)
    with torch.no_grad(), vector.ablate(model, layers=[1]), ru.record(model, layers=[1]) as ablated:
        model(**batch)
    unit = vector[1] / vector[1].norm()
    expected = plain[1] - (plain[1] @ unit)[..., None] * unit
    torch.testing.assert_close(ablated[1], expected, rtol=1e-5, atol=1e-6)
    assert (ablated[1] @ unit).abs().max() < 1e-5


def test_ablating_a_planted_direction_undoes_an_edit_along_it(llama: nn.Module, batch: dict[str, Tensor]) -> None:
    """Steer along r at layer 1, then ablate r at layers 1..: equals ablating r from the unsteered model."""
    r = torch.randn(32)
    with torch.no_grad(), ru.ablate_direction(llama, r, range(1, N_LAYERS)):
        clean = llama(**batch).logits
    with (
        torch.no_grad(),
        ru.ControlVector({1: 5 * r}).apply(llama),
        ru.ablate_direction(llama, r, range(1, N_LAYERS)),
    ):
        attacked = llama(**batch).logits
    torch.testing.assert_close(attacked, clean, rtol=1e-4, atol=2e-4)  # rounding of |h + 5r| before projection


def test_from_contrastive_mean_diff_and_pca(llama: nn.Module, tokenizer: object) -> None:
    positive = ["the virus spreads through water", "a dog ran in the park", "the cat sat"]
    negative = ["the town has a river", "hello world", "the mat"]
    vector = ru.ControlVector.from_contrastive(llama, tokenizer, positive, negative, layers=[1, 2], batch_size=2)
    batches = [dict(b) for b in ru.tokenize_batches(tokenizer, positive, 3)]
    pos = ru.collect(llama, batches[0], layers=[1]).pooled("last")[1]
    neg = ru.collect(llama, next(iter(ru.tokenize_batches(tokenizer, negative, 3))), layers=[1]).pooled("last")[1]
    torch.testing.assert_close(vector[1], (pos - neg).mean(0), rtol=1e-5, atol=1e-6)
    assert vector.metadata["method"] == "mean_diff" and vector.layers == [1, 2]

    pca = ru.ControlVector.from_contrastive(llama, tokenizer, positive, negative, layers=[1], method="pca")
    diffs = pos - neg
    assert float(diffs.mean(0) @ pca[1]) > 0
    assert float((diffs @ (pca[1] / pca[1].norm())).mean()) == pytest.approx(float(pca[1].norm()), rel=1e-4)
    with pytest.raises(ru.ConfigError, match="equally many"):
        ru.ControlVector.from_contrastive(llama, tokenizer, positive, negative[:1])


def test_notebook_reprs(llama: nn.Module, batch: dict[str, Tensor]) -> None:
    html = random_vector([1, 2])._repr_html_()
    assert html.count("<tr>") == 3 and "ControlVector" in html
    cache_html = ru.collect(llama, batch, layers=[0, 3])._repr_html_()
    assert cache_html.count("<tr>") == 3 and "LlamaForCausalLM" in cache_html
