"""LoRA soups: exact interpolation of the updates (``delta``) and the reference code's factor interpolation."""

from __future__ import annotations

import pytest
import torch

from sipo.models.soups import interpolate_lora, lora_delta_weights, split_lora_state_dict

MODULES = ("layers.0.q_proj", "layers.0.v_proj")


def _adapter(rank: int, seed: int, modules=MODULES, in_features: int = 6, out_features: int = 5):
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for module in modules:
        state[f"{module}.lora_A.weight"] = torch.randn(rank, in_features, generator=generator)
        state[f"{module}.lora_B.weight"] = torch.randn(out_features, rank, generator=generator)
    return state


def test_delta_one_hot_is_adapter_a_exactly():
    """w = (1, 0): the soup is A's factors with A's scaling, so its update equals dW_A bit for bit."""
    a, b = _adapter(4, 0), _adapter(4, 1)
    soup = interpolate_lora({"a": a, "b": b}, {"a": 2.0, "b": 2.0}, {"a": 1.0, "b": 0.0}, mode="delta")
    assert soup.rank == 4 and soup.scaling == 2.0
    for key, value in a.items():
        assert torch.equal(soup.state_dict[key], value)
    expected = lora_delta_weights(a, 2.0)
    for module, delta in lora_delta_weights(soup.state_dict, soup.scaling).items():
        assert torch.equal(delta, expected[module])


def test_delta_interpolates_the_updates():
    """dW_soup = 0.3 * 2 * B_a A_a + 0.7 * 2 * B_b A_b, with rank 4 + 4 = 8."""
    a, b = _adapter(4, 0), _adapter(4, 1)
    soup = interpolate_lora({"a": a, "b": b}, {"a": 2.0, "b": 2.0}, {"a": 0.3, "b": 0.7})
    assert soup.rank == 8
    delta_a, delta_b = lora_delta_weights(a, 2.0), lora_delta_weights(b, 2.0)
    for module, delta in lora_delta_weights(soup.state_dict, soup.scaling).items():
        torch.testing.assert_close(delta, 0.3 * delta_a[module] + 0.7 * delta_b[module], atol=1e-5, rtol=1e-5)


def test_delta_with_different_ranks_scalings_and_modules():
    """Scalings 2 and 0.5 differ, so they are folded into B and the soup's scaling is 1; adapter c has rank 2 and
    does not adapt v_proj (a zero update there)."""
    a = _adapter(4, 0)
    c = _adapter(2, 2, modules=("layers.0.q_proj", "layers.1.o_proj"))
    soup = interpolate_lora({"a": a, "c": c}, {"a": 2.0, "c": 0.5}, {"a": 0.4, "c": 0.6})
    assert soup.rank == 6 and soup.scaling == 1.0
    delta_a, delta_c = lora_delta_weights(a, 2.0), lora_delta_weights(c, 0.5)
    got = lora_delta_weights(soup.state_dict, soup.scaling)
    assert set(got) == {"layers.0.q_proj", "layers.0.v_proj", "layers.1.o_proj"}
    torch.testing.assert_close(got["layers.0.q_proj"], 0.4 * delta_a["layers.0.q_proj"] + 0.6 * delta_c["layers.0.q_proj"])
    torch.testing.assert_close(got["layers.0.v_proj"], 0.4 * delta_a["layers.0.v_proj"])
    torch.testing.assert_close(got["layers.1.o_proj"], 0.6 * delta_c["layers.1.o_proj"])


def test_factors_mode_by_hand():
    """1x1 factors, scaling 1, w = (0.5, 0.5): A_a = 1, B_a = 2, A_b = 3, B_b = 4.

    factors: A' = 0.5*1 + 0.5*3 = 2, B' = 0.5*2 + 0.5*4 = 3, update B'A' = 6;
    delta: 0.5 * 2*1 + 0.5 * 4*3 = 7 (factors mode has the cross terms, so it is not the interpolation).
    """
    a = {"m.lora_A.weight": torch.tensor([[1.0]]), "m.lora_B.weight": torch.tensor([[2.0]])}
    b = {"m.lora_A.weight": torch.tensor([[3.0]]), "m.lora_B.weight": torch.tensor([[4.0]])}
    scalings, weights = {"a": 1.0, "b": 1.0}, {"a": 0.5, "b": 0.5}
    factors = interpolate_lora({"a": a, "b": b}, scalings, weights, mode="factors")
    assert factors.rank == 1
    assert factors.state_dict["m.lora_A.weight"].item() == 2.0
    assert factors.state_dict["m.lora_B.weight"].item() == 3.0
    assert lora_delta_weights(factors.state_dict, factors.scaling)["m"].item() == 6.0
    delta = interpolate_lora({"a": a, "b": b}, scalings, weights, mode="delta")
    assert lora_delta_weights(delta.state_dict, delta.scaling)["m"].item() == 7.0


def test_factors_mode_formula_on_random_adapters():
    a, b = _adapter(4, 0), _adapter(4, 1)
    soup = interpolate_lora({"a": a, "b": b}, {"a": 2.0, "b": 2.0}, {"a": 0.3, "b": 0.7}, mode="factors")
    assert soup.rank == 4 and soup.scaling == 2.0
    for key in a:
        torch.testing.assert_close(soup.state_dict[key], 0.3 * a[key] + 0.7 * b[key])


def test_factors_mode_one_hot_is_adapter_a():
    a, b = _adapter(4, 0), _adapter(4, 1)
    soup = interpolate_lora({"a": a, "b": b}, {"a": 2.0, "b": 2.0}, {"a": 1.0, "b": 0.0}, mode="factors")
    for key, value in a.items():
        assert torch.equal(soup.state_dict[key], value)


def test_factors_mode_needs_equal_ranks():
    with pytest.raises(ValueError, match="equal rank"):
        interpolate_lora({"a": _adapter(4, 0), "c": _adapter(2, 1)}, {"a": 1.0, "c": 1.0}, {"a": 0.5, "c": 0.5},
                         mode="factors")


def test_inputs_are_not_modified():
    a, b = _adapter(4, 0), _adapter(4, 1)
    copies = ({k: v.clone() for k, v in a.items()}, {k: v.clone() for k, v in b.items()})
    interpolate_lora({"a": a, "b": b}, {"a": 2.0, "b": 2.0}, {"a": 0.3, "b": 0.7})
    interpolate_lora({"a": a, "b": b}, {"a": 2.0, "b": 2.0}, {"a": 0.3, "b": 0.7}, mode="factors")
    for original, copy in zip((a, b), copies):
        assert all(torch.equal(original[k], copy[k]) for k in original)


def test_bad_inputs_raise():
    a = _adapter(4, 0)
    with pytest.raises(ValueError, match="no adapter named"):
        interpolate_lora({"a": a}, {"a": 1.0}, {"z": 1.0})
    with pytest.raises(ValueError, match="non-zero"):
        interpolate_lora({"a": a}, {"a": 1.0}, {"a": 0.0})
    with pytest.raises(ValueError, match="unsupported"):
        split_lora_state_dict({"m.lora_embedding_A": torch.zeros(1)})
    with pytest.raises(ValueError, match="lacks"):
        split_lora_state_dict({"m.lora_A.weight": torch.zeros(1, 1)})
