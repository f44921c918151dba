"""Pieces shared by the action heads."""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoid_table(length: int, dim: int) -> torch.Tensor:
    """(length, dim) transformer sinusoid table; Evo-1's `time_pos_enc.pe` is one of these
    with 1000 rows, indexed by int(t * 999)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return table


def posemb_sincos(t: torch.Tensor, dim: int, min_period: float = 4e-3,
                  max_period: float = 4.0) -> torch.Tensor:
    """pi0/A1 time embedding of raw t in [0, 1]: (B,) -> (B, dim)."""
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float32, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = t.to(torch.float32)[:, None] * (2 * math.pi / period)[None, :]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


def diffusion_policy_sincos(t: torch.Tensor, dim: int) -> torch.Tensor:
    """A1's time embedding (diffusion_policy's SinusoidalPositionalEncoding) of raw t:
    frequencies exp(-ln(1e4) i / (dim/2 - 1)), then [sin, cos]. (B,) -> (B, dim)."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device)
                     * (-math.log(10000.0) / (half - 1)))
    angle = t.to(torch.float32)[:, None] * freq[None, :]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


class Linear1(nn.Module):
    """A linear layer under a `.linear` key: Evo-1's category-specific layers with one
    category store their weights as `<name>.linear.weight`."""

    def __init__(self, i: int, o: int) -> None:
        super().__init__()
        self.linear = nn.Linear(i, o)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class ResBlock(nn.Module):
    """OpenVLA-OFT / A1 MLPResNet block: x + ReLU(Linear(LN(x)))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    """LN -> fc1 -> ReLU -> residual blocks -> LN -> fc2 (A1's `action_out` and its L1
    regression head)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, blocks: int) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden)
        self.mlp_resnet_blocks = nn.ModuleList(ResBlock(hidden) for _ in range(blocks))
        self.layer_norm2 = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))
