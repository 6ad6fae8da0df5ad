import pytest
import torch
from conftest import D_MODEL, N_LAYERS, make_model
from torch import nn

import repe_unlearn as ru
from repe_unlearn._models import hook_module, parameter_name

DOWN_PROJ = {"gpt2": "mlp.c_proj", "gpt_neox": "mlp.dense_4h_to_h"}
LAYERS_AT = {"gpt2": "transformer.h", "gpt_neox": "gpt_neox.layers"}


def test_decoder_layers_are_the_models_own_modules(model: nn.Module, arch: str) -> None:
    path = LAYERS_AT.get(arch, "model.layers")
    expected = model.get_submodule(path)
    layers = ru.decoder_layers(model)
    assert len(layers) == N_LAYERS
    assert all(a is b for a, b in zip(layers, expected, strict=True))
    assert ru.d_model(model) == D_MODEL


def test_mlp_output_projection_is_found_by_name(model: nn.Module, arch: str) -> None:
    for layer in range(N_LAYERS):
        name = parameter_name(model, ru.mlp_down_proj(model, layer))
        prefix = LAYERS_AT.get(arch, "model.layers")
        assert name == f"{prefix}.{layer}.{DOWN_PROJ.get(arch, 'mlp.down_proj')}.weight"


def test_base_model_without_lm_head_works(model: nn.Module) -> None:
    base = model.base_model
    assert [id(m) for m in ru.decoder_layers(base)] == [id(m) for m in ru.decoder_layers(model)]


def test_negative_layer_indices(llama: nn.Module) -> None:
    assert ru.resolve_layer(llama, -1) == N_LAYERS - 1
    assert ru.resolve_layer(llama, -N_LAYERS) == 0
    assert hook_module(llama, -1, "resid_post")[0] is ru.decoder_layers(llama)[-1]


@pytest.mark.parametrize("bad", [N_LAYERS, -N_LAYERS - 1, 100])
def test_layer_out_of_range_names_value_and_valid_range(llama: nn.Module, bad: int) -> None:
    with pytest.raises(ru.LayerNotFoundError, match=rf"layer {bad} is out of range.*valid: -4\.\.3") as info:
        ru.resolve_layer(llama, bad)
    assert isinstance(info.value, IndexError)


def test_unknown_hook_point(llama: nn.Module) -> None:
    with pytest.raises(ru.HookPointError, match=r"'resid_mid'.*valid: resid_pre, resid_post, mlp_out, attn_out"):
        hook_module(llama, 0, "resid_mid")


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ff = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ff(x)


class Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(), Block()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def test_unknown_architecture_error_says_how_to_pass_a_template() -> None:
    model = Custom()
    with pytest.raises(ru.ArchitectureError, match=r"unknown architecture 'Custom'.*layers_path=.*found at 'blocks'"):
        ru.decoder_layers(model)
    assert len(ru.decoder_layers(model, layers_path="blocks")) == 2


def test_registered_template_makes_everything_work() -> None:
    model = Custom()
    ru.register_architecture(model, ru.Architecture(layers_path="blocks", mlp_down_proj="ff", mlp_out="ff"))
    assert ru.mlp_down_proj(model, 1) is model.blocks[1].ff
    x = torch.randn(2, 3, 4)
    with ru.record(model, point="mlp_out") as cache:
        model(x)
    assert torch.equal(cache[0], model.blocks[0].ff(x))


def test_architecture_template_rejects_non_paths() -> None:
    with pytest.raises(ru.ArchitectureError, match="not a dotted path"):
        ru.Architecture(layers_path="model/layers")


def test_every_supported_architecture_is_listed() -> None:
    assert {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "gpt2", "gpt_neox"} <= set(
        ru.supported_model_types()
    )
    assert make_model("gemma2").config.model_type in ru.supported_model_types()
