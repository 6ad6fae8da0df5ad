"""One vector, every file the package writes: RMU targets, probe directions and saved vectors load alike."""

from pathlib import Path

import pytest
import torch
from conftest import make_model

import repe_unlearn as ru
from repe_unlearn import rmu
from repe_unlearn.diagnostics import fit_probe
from repe_unlearn.rmu.targets import save_directions


def test_rmu_control_vectors_load_as_steering_vectors_with_their_coefficient(tmp_path: Path) -> None:
    directions = torch.nn.functional.normalize(torch.randn(2, 32), dim=-1)
    save_directions(tmp_path / "cv.safetensors", directions, layer=3, coefficients=[6.5, 7.0])
    vector = ru.ControlVector.load(tmp_path / "cv.safetensors", topic=1)
    assert vector.layers == [3] and torch.equal(vector[3], directions[1])
    assert vector.metadata["coefficient"] == 7.0 and vector.metadata["source"] == "rmu"
    with pytest.raises(ru.ConfigError, match="no topic 2"):
        ru.ControlVector.load(tmp_path / "cv.safetensors", topic=2)
    with pytest.raises(ru.ConfigError, match="steered at layer 3, not 4"):
        ru.ControlVector.load(tmp_path / "cv.safetensors", layer=4)
    old = tmp_path / "old"  # written before the layer was recorded: the run record beside it says
    old.mkdir()
    save_directions(old / "control_vectors.safetensors", directions)
    with pytest.raises(ru.ConfigError, match="pass layer="):
        ru.ControlVector.load(old / "control_vectors.safetensors")
    assert ru.ControlVector.load(old / "control_vectors.safetensors", layer=2).layers == [2]
    (old / "rmu_config.json").write_text('{"config": {"layer": 5}}')
    assert ru.ControlVector.load(old / "control_vectors.safetensors").layers == [5]


def test_an_rmu_result_steers_with_its_own_target(tokenizer: object) -> None:
    from conftest import FORGET, RETAIN

    model = make_model("llama")
    config = rmu.RMUConfig(layer=1, steering_coeff=(5.0,), alpha=(10.0,), batch_size=4, max_batches=1, max_length=16)
    result = rmu.unlearn(model, tokenizer, [FORGET], [RETAIN], config, progress=False)
    vector = result.control_vector()
    assert vector.layers == [1] and torch.equal(vector[1], result.directions[0])
    assert vector.metadata["coefficient"] == result.coefficients[0]
    ids = tokenizer(["the virus spreads"], return_tensors="pt")  # type: ignore[operator]
    with ru.record(model, [1]) as plain:
        model(**ids)
    with vector.apply(model, vector.metadata["coefficient"]), ru.record(model, [1]) as steered:
        model(**ids)
    added = result.coefficients[0] * result.directions[0]
    assert torch.allclose(steered[1], plain[1] + added, atol=1e-5)  # the target c·u, added by hand
    with pytest.raises(ru.ConfigError, match="no topic 1"):
        result.control_vector(1)


def test_a_probe_gives_the_direction_it_reads(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    signal = torch.nn.functional.normalize(torch.randn(16, generator=generator), dim=0)
    labels = torch.arange(200) % 2
    features = torch.randn(200, 16, generator=generator) * 0.3 + 3.0 * labels[:, None] * signal + 5.0
    probe = fit_probe(features, labels, n_classes=2, layer=4)
    assert probe.test_accuracy > 0.95
    raw_logits = features @ probe.weight + probe.bias  # the raw-space read-out gives the probe's own answers
    assert float((raw_logits.argmax(-1) == labels).float().mean()) > 0.95
    vector = probe.direction(1, 0)
    assert vector.layers == [4] and float(vector[4] @ signal) > 0.8  # it found the planted direction
    vector.save(tmp_path / "probe.safetensors")
    loaded = ru.ControlVector.load(tmp_path / "probe.safetensors")
    assert torch.equal(loaded[4], vector[4]) and loaded.metadata["source"] == "probe"
    with pytest.raises(ru.ConfigError, match="same class"):
        probe.direction(1, 1)
    with pytest.raises(ru.ConfigError, match="not a class"):
        probe.direction(2, 0)


def test_an_unlearned_directory_s_vectors_load_with_layer_and_coefficient(tokenizer: object, tmp_path: Path) -> None:
    from conftest import FORGET, RETAIN

    model = make_model("llama")
    config = rmu.RMUConfig(layer=2, steering_coeff=(5.0,), alpha=(10.0,), batch_size=4, max_batches=1, max_length=16)
    result = rmu.unlearn(model, tokenizer, [FORGET], [RETAIN], config, progress=False)
    out = rmu.save_unlearned(tmp_path / "unlearned", model, tokenizer, result)
    vector = ru.ControlVector.load(out / "control_vectors.safetensors")
    assert vector.layers == [2] and vector.metadata["coefficient"] == result.coefficients[0]
    assert torch.equal(vector[2], result.directions[0].float())
