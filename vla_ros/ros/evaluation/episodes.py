"""Closed-loop episodes of the tabletop touch tasks under the full ROS pipeline.

The sim robot with its scene (`sim_robot`, scene:=tabletop: the real controller topic and
message type, joint states, scene and wrist cameras at 30 Hz, the task's instruction) runs as a
separate process; the `vla_policy` node runs here. Each episode goes through the nodes' real
services: `/vla_policy/engage` false (hold), `/sim_robot/new_episode` (home pose, new layout,
instruction published to `/vla_policy/instruction`), a short settle, `/vla_policy/reset` (drops
the previous episode's plan) and `/vla_policy/engage` true; success is read from
`/sim_robot/episode_status`. Used by `vla-ros demo` and `vla-ros eval`.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np

SETTLE_S = 0.8


class _Client:
    """The evaluator's own node: service clients, the sim's status, frames for the video."""

    def __init__(self, executor, record_every: int = 3, camera: str = 'scene') -> None:
        from rclpy.node import Node
        from sensor_msgs.msg import Image
        from std_msgs.msg import String
        from std_srvs.srv import SetBool, Trigger

        self.node = Node('vla_eval')
        self.engage = self.node.create_client(SetBool, '/vla_policy/engage')
        self.reset = self.node.create_client(Trigger, '/vla_policy/reset')
        self.new_episode = self.node.create_client(Trigger, '/sim_robot/new_episode')
        self.status: dict = {}
        self.recording = False
        self.frames: list[np.ndarray] = []
        self._n = 0
        self._every = record_every
        self._lock = threading.Lock()
        self.node.create_subscription(String, '/sim_robot/episode_status', self._on_status, 10)
        self.node.create_subscription(Image, f'/camera/{camera}/image_raw', self._on_image, 10)
        self.captions: list[str] = []
        self.caption = ''
        executor.add_node(self.node)

    def _on_status(self, msg) -> None:
        with self._lock:
            self.status = json.loads(msg.data)

    def _on_image(self, msg) -> None:
        if not self.recording:
            return
        self._n += 1
        if self._n % self._every == 0 and len(self.frames) < 2000:
            from vla_ros.ros.conversions import image_to_numpy

            img, _ = image_to_numpy(msg)
            self.frames.append(np.array(img))
            with self._lock:
                self.captions.append(self.caption)

    def latest(self) -> dict:
        with self._lock:
            return dict(self.status)

    def call(self, client, request, timeout_s: float = 10.0):
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise RuntimeError(f'service {client.srv_name} is not available')
        future = client.call_async(request)
        t_end = time.monotonic() + timeout_s
        while not future.done():
            if time.monotonic() > t_end:
                raise RuntimeError(f'service {client.srv_name} did not answer in {timeout_s} s')
            time.sleep(0.01)
        return future.result()


def run_episodes(package: str, robot: str = 'xarm6', episodes: int = 10, seed0: int = 1000,
                 timeout_s: float = 12.0, params: dict | None = None,
                 record_episodes: int = 0, progress=print, task: str = 'touch',
                 view_rate_hz: float = 0.0) -> dict:
    """Runs `episodes` episodes (layout seeds seed0, seed0+1, ...) of `task` and reports
    success and the runtime's measurements. `record_episodes`: keep frames of the first ones
    (the sim's third-person view at `view_rate_hz` where > 0, else the scene camera)."""
    from std_srvs.srv import SetBool, Trigger

    from vla_ros.ros.evaluation.node_bench import policy_with_peers, runtime_report

    params = dict(params or {})
    results = []
    peer = {'episode_seed': seed0 - 1, 'task': task}
    if view_rate_hz > 0:
        peer['view_rate_hz'] = view_rate_hz
    with policy_with_peers(package, robot, params=params, scene='tabletop',
                           peer_params=peer) as (node, m, executor):
        client = _Client(executor, record_every=1 if view_rate_hz > 0 else 3,
                         camera='view' if view_rate_hz > 0 else 'scene')
        inferences0 = node.worker.stats.inferences
        node.worker.stats.exit_counts.clear()
        node.worker.latencies_ms.clear()
        node.e2e_ms.clear()
        t_all = time.monotonic()
        for i in range(episodes):
            client.call(client.engage, SetBool.Request(data=False))
            reply = client.call(client.new_episode, Trigger.Request())
            if not reply.success:
                raise RuntimeError(f'new episode failed: {reply.message}')
            ep = json.loads(reply.message)
            client.recording = i < record_episodes
            client.caption = f'{i + 1}/{episodes}  "{ep["instruction"]}"'
            time.sleep(SETTLE_S)
            client.call(client.reset, Trigger.Request())
            engaged = client.call(client.engage, SetBool.Request(data=True))
            if not engaged.success:
                raise RuntimeError(f'could not engage: {engaged.message}')
            t0 = time.monotonic()
            next_line = t0 + 1.0
            status: dict = {}
            while time.monotonic() - t0 < timeout_s:
                time.sleep(0.05)
                status = client.latest()
                if status.get('seed') == ep['seed'] and status.get('success'):
                    break
                if time.monotonic() >= next_line:
                    next_line += 1.0
                    w = node.worker
                    lat = list(w.latencies_ms)[-20:]
                    cmd = node._last_cmd
                    progress(f'  episode {i + 1}/{episodes} t={time.monotonic() - t0:4.1f} s  '
                             f'"{ep["instruction"]}"  inference {w.inference_hz():4.1f} Hz  '
                             f'latency {np.median(lat) if lat else 0:4.0f} ms  exit '
                             f'{w.stats.last_exit_layer}  safety {cmd.state if cmd else "-"}'
                             f'  touching {status.get("touching") or "-"}')
            elapsed = time.monotonic() - t0
            ok = bool(status.get('seed') == ep['seed'] and status.get('success'))
            if ok and client.recording:  # the result stays in view a moment
                client.caption = f'{i + 1}/{episodes}  "{ep["instruction"]}"  - success'
                time.sleep(1.0)
            results.append({'seed': ep['seed'], 'instruction': ep['instruction'],
                            'target': ep['target'],
                            'destination': ep.get('destination', ''), 'success': ok,
                            'time_s': round(elapsed, 2),
                            'touching_at_end': status.get('touching', '')})
            done = sum(r['success'] for r in results)
            progress(f'episode {i + 1}/{episodes}: {"SUCCESS" if ok else "failure"} '
                     f'"{ep["instruction"]}" in {results[-1]["time_s"]:.1f} s '
                     f'({done}/{i + 1} so far)')
        client.call(client.engage, SetBool.Request(data=False))
        client.recording = False
        report = {'package': m.name, 'robot': robot, 'params': params,
                  'episodes': len(results),
                  'success_rate': float(np.mean([r['success'] for r in results])),
                  'time_to_success_s': _times([r['time_s'] for r in results if r['success']]),
                  'wall_s': round(time.monotonic() - t_all, 1),
                  'results': results}
        report.update(runtime_report(node, m, inferences0))
        report['inference_latencies_ms'] = list(node.worker.latencies_ms)
        report['frames'] = client.frames
        report['captions'] = client.captions
        report['frame_s'] = 1.0 / view_rate_hz if view_rate_hz > 0 else 3 / 30  # cameras: 30 Hz
    # The client's node stays on the executor: policy_with_peers destroys every node of it
    # once the spin thread has ended (destroyed while that thread builds its wait set, an
    # entity raises InvalidHandle there).
    return report


def write_gif(path: Path, frames: list[np.ndarray], captions: list[str] | None = None,
              frame_s: float = 0.1) -> Path:
    """Frames (small model-camera frames are enlarged) with their caption drawn on a band
    along the bottom."""
    from PIL import Image, ImageDraw

    imgs = []
    for k, f in enumerate(frames):
        img = Image.fromarray(f)
        if img.width < 320:
            img = img.resize((img.width * 3, img.height * 3), Image.NEAREST)
        text = captions[k] if captions and k < len(captions) else ''
        if text:
            draw = ImageDraw.Draw(img)
            draw.rectangle((0, img.height - 22, img.width, img.height), fill=(0, 0, 0))
            draw.text((6, img.height - 18), text,
                      fill=(120, 255, 120) if text.endswith('success') else (255, 255, 255))
        imgs.append(img)
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(frame_s * 1000),
                 loop=0)
    return path


def _times(values) -> dict:
    a = np.asarray(values, float)
    if a.size == 0:
        return {}
    return {'p50': float(np.median(a)), 'max': float(a.max())}


def write_media(report: dict, out_dir: str | Path) -> list[Path]:
    """demo.gif from the recorded scene-camera frames, and plots of the run."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    frames = report.get('frames') or []
    if frames:
        gif = out / 'demo.gif'
        write_gif(gif, frames, report.get('captions'), report.get('frame_s', 0.1))
        paths.append(gif)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    res = report['results']
    axes[0].bar(range(len(res)), [r['time_s'] for r in res],
                color=['tab:green' if r['success'] else 'tab:red' for r in res])
    axes[0].set_xlabel('episode')
    axes[0].set_ylabel('time (s); green = success')
    axes[0].set_title(f'success {report["success_rate"]:.0%} of {len(res)}')
    hist = report.get('exit_histogram', {})
    axes[1].bar([str(k) for k in hist], list(hist.values()))
    axes[1].set_xlabel('exit layer')
    axes[1].set_ylabel('chunks')
    saved = report.get('backbone_compute_saved')
    axes[1].set_title('exits' + (f' (backbone compute saved {saved:.0%})'
                                 if saved is not None else ''))
    lat = report.get('inference_latencies_ms') or []
    axes[2].hist(lat, bins=30)
    axes[2].set_xlabel('observation -> chunk queued (ms)')
    axes[2].set_title('inference latency')
    fig.suptitle(f'{report["package"]} on a simulated {report["robot"]}')
    fig.tight_layout()
    plot = out / 'report.png'
    fig.savefig(plot, dpi=90)
    plt.close(fig)
    paths.append(plot)
    return paths
