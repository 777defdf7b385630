import pytest
import torch
from mmf.common.registry import registry
from torch import nn

from mmf_rec.encoders.dense import DenseEncoder, dlrm_init_, mlp


def test_output_shape_and_relu_after_every_layer():
    torch.manual_seed(0)
    enc = DenseEncoder({"in_dim": 13, "hidden_dims": [32, 16]})
    out = enc(torch.randn(64, 13))
    assert out.shape == (64, 16)
    assert enc.out_dim == 16
    kinds = [type(m) for m in enc.layers]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU]
    assert out.min() >= 0 and (out == 0).any()


def test_gradients_reach_every_layer():
    enc = DenseEncoder({"in_dim": 4, "hidden_dims": [8, 8, 3]})
    x = torch.randn(32, 4, requires_grad=True)
    enc(x).sum().backward()
    assert x.grad.abs().sum() > 0
    for p in enc.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_mlp_without_final_activation_ends_in_a_linear_layer():
    torch.manual_seed(0)
    top = mlp([6, 10, 1], final_activation=False)
    assert [type(m) for m in top] == [nn.Linear, nn.ReLU, nn.Linear]
    assert (top(torch.randn(256, 6)) < 0).any()  # a logit can be negative
    assert [type(m) for m in mlp([6, 1], final_activation=True)] == [nn.Linear, nn.ReLU]


def test_mlp_rejects_too_few_or_bad_sizes():
    with pytest.raises(ValueError, match="at least two positive sizes"):
        mlp([4], final_activation=False)
    with pytest.raises(ValueError, match="at least two positive sizes"):
        mlp([4, 0], final_activation=False)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match=r"\['in_dim'\] must be set"):
        DenseEncoder({"hidden_dims": [4]})
    with pytest.raises(ValueError, match="at least one layer"):
        DenseEncoder({"in_dim": 3, "hidden_dims": []})
    with pytest.raises(ValueError, match="dense encoder config: .*hiden_dims"):
        DenseEncoder({"in_dim": 3, "hiden_dims": [4]})


def test_wrong_input_width_is_reported():
    enc = DenseEncoder({"in_dim": 3, "hidden_dims": [4]})
    with pytest.raises(ValueError, match=r"expected input \(batch, 3\), got \(2, 5\)"):
        enc(torch.randn(2, 5))


def test_registered_and_buildable_from_params():
    assert registry.get_encoder_class("dense") is DenseEncoder
    enc = DenseEncoder.from_params(in_dim=3, hidden_dims=[5, 2])
    assert enc(torch.randn(7, 3)).shape == (7, 2)


def test_dlrm_init_gives_glorot_weights_and_small_biases():
    torch.manual_seed(0)
    layers = dlrm_init_(mlp([300, 500, 100], final_activation=False))
    for layer in (layers[0], layers[2]):
        fan_out, fan_in = layer.weight.shape
        assert layer.weight.std().item() == pytest.approx((2 / (fan_in + fan_out)) ** 0.5, rel=0.03)
        assert abs(layer.weight.mean().item()) < 0.01
        assert layer.bias.std().item() == pytest.approx((1 / fan_out) ** 0.5, rel=0.2)
    # torch's default: uniform with std sqrt(1 / (3 fan_in)), 1.5x smaller here
    assert layers[0].weight.std().item() > 1.4 * (1 / (3 * 300)) ** 0.5
