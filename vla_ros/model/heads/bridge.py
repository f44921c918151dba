"""VLA-Adapter's bridge-attention policy (reference/seeds.md §3; upstream
`prismatic/models/action_heads.py`).

The policy starts from a constant (LN and fc1 of zeros, as upstream), then block i attends over
[its own tokens ; the "task" features of decoder layer i ; the adapter features of layer i
(the 64 ActionQuery states) plus the proprio token], with one learnable gate tanh(g). Block i
reads decoder layer i's output (upstream: hidden_states[i + 1]), so at an exit after layer L
the policy runs blocks 0..L, then its output layers. Two block variants:
  original: shared K/V projections; gate on the task (raw) scores; no positions.
  pro: separate K/V per source, RoPE on each source (upstream's interleaved rotation), gate
       on the task scores.
Every block ends ffn(attn + x) with ffn = LN, Linear, ReLU and no further residual (upstream).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vla_ros.model.config import VLAConfig


def _rope(n: int, dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device)
                                / dim))
    freqs = torch.arange(n, dtype=torch.float32, device=device)[:, None] * inv_freq[None]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # Upstream pairs a half-split table with an even/odd rotation; kept as trained.
    rot = torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).reshape(x.shape)
    return x * cos + rot * sin


class BridgeBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, pro: bool) -> None:
        super().__init__()
        self.pro, self.num_heads, self.head_dim = pro, num_heads, dim // num_heads
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())
        self.q_proj = nn.Linear(dim, dim)
        self.o_proj = nn.Linear(dim, dim)
        self.gating_factor = nn.Parameter(torch.zeros(1))
        if pro:
            for name in ('k_self', 'v_self', 'k_adapter', 'v_adapter', 'k_task', 'v_task'):
                setattr(self, name, nn.Linear(dim, dim))
        else:
            self.k_proj = nn.Linear(dim, dim)
            self.v_proj = nn.Linear(dim, dim)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, task: torch.Tensor, queries: torch.Tensor,
                proprio: torch.Tensor) -> torch.Tensor:
        adapter = torch.cat([queries, proprio], dim=1)
        gate = torch.tanh(self.gating_factor)
        q = self._heads(self.q_proj(x))
        if self.pro:
            k_self, v_self = self._heads(self.k_self(x)), self._heads(self.v_self(x))
            k_ad, v_ad = self._heads(self.k_adapter(adapter)), self._heads(self.v_adapter(adapter))
            k_task, v_task = self._heads(self.k_task(task)), self._heads(self.v_task(task))
            cos, sin = _rope(x.shape[1], self.head_dim, x.device)
            q, k_self = _rotate(q, cos, sin), _rotate(k_self, cos, sin)
            k_ad = _rotate(k_ad, *_rope(adapter.shape[1], self.head_dim, x.device))
            k_task = _rotate(k_task, *_rope(task.shape[1], self.head_dim, x.device))
            scores = [q @ k_self.transpose(-2, -1), q @ k_ad.transpose(-2, -1),
                      q @ k_task.transpose(-2, -1) * gate]
            values = [v_self, v_ad, v_task]
        else:
            # Upstream's original block names the (queries, proprio) states "task" and the
            # raw states "adapter"; the gate scales the raw-state scores.
            k = [self._heads(self.k_proj(s)) for s in (x, adapter, task)]
            v = [self._heads(self.v_proj(s)) for s in (x, adapter, task)]
            scores = [q @ k[0].transpose(-2, -1), q @ k[1].transpose(-2, -1),
                      q @ k[2].transpose(-2, -1) * gate]
            values = v
        weights = torch.softmax(torch.cat(scores, -1) / math.sqrt(self.head_dim), dim=-1)
        o = (weights @ torch.cat(values, dim=2)).transpose(1, 2).reshape(x.shape)
        return self.ffn(self.o_proj(o) + x)


class BridgePolicy(nn.Module):
    """`action_head.model`: layer_norm1, fc1, mlp_resnet_blocks.N, layer_norm2, fc2."""

    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        d, a = cfg.lm.hidden_size, cfg.action_dim
        self.chunk_len, self.in_dim = cfg.chunk_len, d * a
        self.layer_norm1 = nn.LayerNorm(d * a)
        self.fc1 = nn.Linear(d * a, d)
        self.mlp_resnet_blocks = nn.ModuleList(
            BridgeBlock(d, cfg.head.num_heads, cfg.head.pro) for _ in range(cfg.lm.num_layers))
        self.layer_norm2 = nn.LayerNorm(d)
        self.fc2 = nn.Linear(d, a)

    def start(self, batch: int) -> torch.Tensor:
        zeros = torch.zeros(batch, self.chunk_len, self.in_dim, device=self.fc1.weight.device)
        return torch.relu(self.fc1(self.layer_norm1(zeros)))

    def out(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.layer_norm2(x))


def bf16_round(x: torch.Tensor) -> torch.Tensor:
    """x rounded to the nearest bfloat16 value, kept in x's dtype (upstream's `.to(bf16)`
    casts, reproduced inside an fp32 graph)."""
    return x.to(torch.bfloat16).to(x.dtype)


class BridgeHead(nn.Module):
    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        d = cfg.lm.hidden_size
        self.num_queries = cfg.head.num_action_queries
        # Upstream casts the ActionQuery features and the normalized proprio to bfloat16
        # (modeling_prismatic.py predict_action, hard-coded).
        self.bf16 = cfg.head.bf16_features
        self.proprio_projector = nn.Module()
        self.proprio_projector.fc1 = nn.Linear(cfg.state_dim, d)
        self.proprio_projector.fc2 = nn.Linear(d, d)
        self.action_head = nn.Module()
        self.action_head.model = BridgePolicy(cfg)

    @property
    def policy(self) -> BridgePolicy:
        return self.action_head.model

    def embed(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.proprio_projector
        state = bf16_round(state) if self.bf16 else state
        proprio = p.fc2(F.gelu(p.fc1(state)))[:, None, :]
        return self.policy.start(state.shape[0]), proprio

    def run_blocks(self, x: torch.Tensor, proprio: torch.Tensor, features: list[torch.Tensor],
                   start: int) -> torch.Tensor:
        """features[i]: layer (start + i)'s states at [task positions ; query positions]."""
        for offset, feat in enumerate(features):
            block = self.policy.mlp_resnet_blocks[start + offset]
            task, queries = feat[:, :-self.num_queries], feat[:, -self.num_queries:]
            queries = bf16_round(queries) if self.bf16 else queries
            x = block(x, task, queries, proprio)
        return x

    def out(self, x: torch.Tensor) -> torch.Tensor:
        return self.policy.out(x)
