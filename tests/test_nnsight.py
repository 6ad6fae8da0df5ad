import subprocess
import sys

import pytest
import torch
from conftest import make_model
from torch import Tensor

import repe_unlearn as ru

nnsight_adapter = pytest.importorskip("repe_unlearn.nnsight_adapter")


@pytest.fixture(params=["llama", "gpt2", "gemma2"])
def wrapped(request: pytest.FixtureRequest, tokenizer: object) -> tuple[torch.nn.Module, object]:
    model = make_model(str(request.param))
    return model, nnsight_adapter.wrap(model, tokenizer)


@pytest.fixture
def inputs(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The batch with explicit position_ids: nnsight would otherwise derive them for the left-padded row."""
    positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    return {**batch, "position_ids": positions}


def test_core_package_does_not_import_nnsight() -> None:
    code = "import sys, repe_unlearn; print('nnsight' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("point", ["resid_post", "resid_pre", "mlp_out", "attn_out"])
def test_record_equals_nnsight_saved_outputs(wrapped: tuple, inputs: dict[str, Tensor], point: str) -> None:
    model, nn_model = wrapped
    with torch.no_grad(), ru.record(model, point=point) as cache:
        model(**inputs)
    traced = nnsight_adapter.trace_cache(nn_model, inputs, point=point)
    assert traced.layers == cache.layers
    for layer in cache.layers:
        assert torch.equal(traced[layer], cache[layer])
    assert traced.attention_mask is not None and torch.equal(traced.attention_mask, inputs["attention_mask"])


def test_steering_through_nnsight_equals_the_hook_path(wrapped: tuple, inputs: dict[str, Tensor]) -> None:
    model, nn_model = wrapped
    vector = ru.ControlVector({0: torch.randn(32), 2: torch.randn(32)})
    with torch.no_grad(), vector.apply(model, 1.5), ru.record(model) as hooked:
        logits = model(**inputs).logits
    traced = nnsight_adapter.trace_cache(nn_model, inputs, vector=vector, coeff=1.5)
    for layer in hooked.layers:
        assert torch.equal(traced[layer], hooked[layer])

    with nn_model.trace(inputs):  # nnsight runs a trace's code in model order: steer 0, read 1, steer 2, read 3
        nnsight_adapter.steer(nn_model, vector, 1.5, layers=[0])
        saved = nnsight_adapter.save_activations(nn_model, [1])
        nnsight_adapter.steer(nn_model, vector, 1.5, layers=[2])
        saved |= nnsight_adapter.save_activations(nn_model, [3])
        out = nn_model.output.save()
    cache = nnsight_adapter.to_cache(saved, model=model)
    assert torch.equal(cache[3], hooked[3]) and torch.equal(cache[-3], hooked[1])
    assert torch.equal(out.logits, logits)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
@pytest.mark.parametrize("point", ["attn_heads", "attn_pattern"])
def test_head_points_equal_nnsight_saved_values(
    arch: str, point: str, inputs: dict[str, Tensor], tokenizer: object
) -> None:
    model = make_model(arch)
    model.set_attn_implementation("eager")
    nn_model = nnsight_adapter.wrap(model, tokenizer)
    with torch.no_grad(), ru.record(model, [1, 3], point=point) as cache:
        model(**inputs)
    traced = nnsight_adapter.trace_cache(nn_model, inputs, [1, 3], point=point)
    assert traced.point == point and traced.layers == [1, 3]
    for layer in (1, 3):
        assert traced[layer].ndim == 4 and torch.equal(traced[layer], cache[layer])
