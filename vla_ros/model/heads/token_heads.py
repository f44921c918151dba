"""Heads that read the decoder's hidden states at fixed action positions.

- RegressionHead (A1 `l1_regression`): per chunk step, the hidden states of the A per-axis
  action tokens are concatenated and an MLPResNet (2 blocks) regresses the A values. The
  state enters the prompt through `proprio_projector` (32 -> D -> D, GELU) at the proprio slot.
- NARTokenHead (EdgeVLA): H*A action positions whose keys are hidden from every query, so each
  sees only the prompt and all action tokens come from one forward. The hidden state at
  action position j (or, with `head.feature_shift` = 1, the position before it: upstream's
  causal-LM shift) gives the logits of value j over `num_bins` bins on [-1, 1]; the action is
  the centre of the arg-max bin (`head.bin_scheme`: our uniform bins, or OpenVLA's 255
  centres over 256 logits, row k = LM-head row vocab_size - 1 - k). `bin_head` holds the
  LM-head rows of the bin tokens. Upstream feeds ground-truth action tokens at the action
  positions in training and has no single-pass inference path (seeds.md §4); here every
  action position holds one token, `VLAConfig.action_token_id` (the manifest's prompt layout
  records it): our own models train and run with a placeholder there; converted EdgeVLA
  checkpoints feed the action token of the bin holding 0.0, an in-distribution input.
Both apply the decoder's final norm to the exit layer's hidden states first (shared head).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vla_ros.model.config import VLAConfig
from vla_ros.model.heads.common import MLPResNet


class RegressionHead(nn.Module):
    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        d = cfg.lm.hidden_size
        self.chunk_len, self.action_dim = cfg.chunk_len, cfg.action_dim
        self.proprio_projector = nn.Module()
        self.proprio_projector.fc1 = nn.Linear(cfg.state_dim, d)
        self.proprio_projector.fc2 = nn.Linear(d, d)
        self.action_head = MLPResNet(d * cfg.action_dim, d, cfg.action_dim,
                                     cfg.head.resnet_blocks)

    def proprio(self, state: torch.Tensor) -> torch.Tensor:
        p = self.proprio_projector
        return p.fc2(F.gelu(p.fc1(state)))

    def forward(self, action_hidden: torch.Tensor) -> torch.Tensor:
        """(B, H*A, D) normed hidden states at the action tokens -> (B, H, A)."""
        x = action_hidden.reshape(action_hidden.shape[0], self.chunk_len, -1)
        return self.action_head(x)


class NARTokenHead(nn.Module):
    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        self.chunk_len, self.action_dim = cfg.chunk_len, cfg.action_dim
        n = cfg.head.num_bins
        self.bin_head = nn.Linear(cfg.lm.hidden_size, n, bias=False)
        self.openvla = cfg.head.bin_scheme == 'openvla'
        edges = torch.linspace(-1.0, 1.0, n if self.openvla else n + 1)
        self.register_buffer('bin_centers', (edges[:-1] + edges[1:]) / 2, persistent=False)

    def logits(self, action_hidden: torch.Tensor) -> torch.Tensor:
        """(B, H*A, D) -> (B, H*A, bins)."""
        return self.bin_head(action_hidden)

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """Arg-max bin centres, (B, H*A, bins) -> (B, H, A) in [-1, 1]. openvla: the last
        logit has no centre of its own and decodes as the one before it (upstream's clip)."""
        idx = logits.argmax(dim=-1)
        if self.openvla:
            idx = idx.clamp(max=self.bin_centers.shape[0] - 1)
        return self.bin_centers[idx].view(-1, self.chunk_len, self.action_dim)

    def targets(self, actions: torch.Tensor) -> torch.Tensor:
        """Normalized actions (B, H, A) -> bin indices (B, H*A); openvla: digitize - 1, so
        +1.0 falls into the last logit as upstream's `np.digitize` puts it."""
        n = self.bin_head.out_features
        cells = n - 1 if self.openvla else n
        idx = torch.floor((actions.clamp(-1, 1) + 1) / 2 * cells).long().clamp(0, n - 1)
        return idx.flatten(1)
