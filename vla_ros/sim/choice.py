"""Does a model trained on the touch tasks go for the block the words name? (`ChoiceCheck`,
logged while `vla-ros make-default` trains.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from vla_ros.sim.train import Prepared


class ChoiceCheck:
    """Does the model go for the block the words name? At the first frame of each given
    episode, the expert's chunk toward every block is worked out; the model's chunk (per exit)
    counts as choosing the block whose chunk is nearest (L1). Chance is 1/3. Unlike the L1
    loss, which a model that ignores the words keeps low, this measures the words' effect."""

    def __init__(self, robot: str, demos: dict[str, np.ndarray], data: Prepared,
                 episodes, seed: int = 0) -> None:
        from vla_ros.sim.expert import TouchExpert, episode_task
        from vla_ros.sim.scene import COLORS, TabletopScene

        ep = demos['episode']
        self.frames = np.array([np.flatnonzero(ep == e)[0] for e in episodes])
        self.data = data
        chunk_len = data.actions.shape[1]
        scene = TabletopScene(robot, (16, 16))
        expert = TouchExpert(scene, horizon=chunk_len)
        alts, truth = [], []
        try:
            for i in self.frames:
                layout, target = episode_task(seed, int(ep[i]))
                row = []
                for c in COLORS:
                    expert.plan(scene.reset(layout, c))
                    row.append(expert.chunk(demos['state'][i]))
                alts.append(data.action_norm.normalize(np.array(row)))
                truth.append(list(COLORS).index(target))
        finally:
            scene.close()
        self.alternatives, self.truth = np.array(alts, np.float32), np.array(truth)

    def __call__(self, model) -> dict[str, float]:
        import torch

        model.eval()
        b = self.data.batch(self.frames)
        # A flow head solves from the noise distribution's mean (zeros for both conventions),
        # so the check is deterministic.
        noise = torch.zeros(len(self.frames), *self.alternatives.shape[2:])
        per_exit = model.actions_at_exits(b.images, b.input_ids, b.attention_mask, b.state,
                                          noise, num_steps=10)
        out = {}
        for layer, pred in per_exit.items():
            d = np.abs(self.alternatives - pred.numpy()[:, None]).mean(axis=(2, 3))
            out[str(layer)] = round(float((d.argmin(1) == self.truth).mean()), 3)
        return out
