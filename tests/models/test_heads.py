"""The MLP heads: OverArch (to a click logit) and Tower (to a unit vector)."""

import torch
import torch.nn.functional as F
from torch import nn

from mmf_rec.models.over_arch import OverArch
from mmf_rec.models.towers import Tower


def test_over_arch_is_linear_relu_linear_with_the_keys_checkpoints_hold():
    arch = OverArch(7, [5, 3])
    assert [type(m) for m in arch] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert list(arch.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias",
                                       "4.weight", "4.bias"]
    assert arch(torch.randn(4, 7)).shape == (4, 1)


def test_over_arch_computes_by_hand():
    arch = OverArch(2, [2])
    with torch.no_grad():
        arch[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
        arch[0].bias.zero_()
        arch[2].weight.copy_(torch.tensor([[2.0, 3.0]]))
        arch[2].bias.fill_(0.5)
    # relu([1, -2]) = [1, 0] -> 2 * 1 + 3 * 0 + 0.5; relu([-1, -4]) -> 0.5
    out = arch(torch.tensor([[1.0, 2.0], [-1.0, 4.0]]))
    assert out.tolist() == [[2.5], [0.5]]


def test_over_arch_initialises_as_mlp_does_from_one_seed():
    from mmf_rec.encoders.dense import mlp

    torch.manual_seed(3)
    arch = OverArch(6, [4])
    torch.manual_seed(3)
    plain = mlp([6, 4, 1], final_activation=False)
    assert all(torch.equal(a, b) for a, b in zip(arch.state_dict().values(),
                                                  plain.state_dict().values()))


def test_tower_gives_unit_vectors_of_the_normalised_mlp():
    torch.manual_seed(0)
    tower = Tower(10, [8], 4)
    x = torch.randn(6, 10)
    out = tower(x)
    assert out.shape == (6, 4)
    assert torch.allclose(out.norm(dim=1), torch.ones(6))
    expected = F.normalize(tower[2](tower[1](tower[0](x))), dim=-1)
    assert torch.allclose(out, expected)
    assert list(tower.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    # scaling the last layer changes lengths, not directions
    with torch.no_grad():
        tower[2].weight.mul_(5.0)
        tower[2].bias.mul_(5.0)
    assert torch.allclose(tower(x), out, atol=1e-6)
