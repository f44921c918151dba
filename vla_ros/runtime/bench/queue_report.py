"""The queue bench's table (strategy x scenario) and plots. Imports numpy (matplotlib only
for plots)."""

from __future__ import annotations

from pathlib import Path

from vla_ros.runtime.bench.queue_bench import Case


def _opt(value: float | None) -> str:
    return '-' if value is None else f'{value:.2f}'


def format_table(summary: dict) -> str:
    cfg = summary['config']
    lines = [f'queue bench: {cfg["dof"]} joints, H={cfg["chunk_len"]} x '
             f'{cfg["chunk_dt_s"] * 1000:g} ms, latency {cfg["latency_s"] * 1000:g} '
             f'+/- {cfg["jitter_s"] * 1000:g} ms with {cfg["tail_prob"]:.0%} slow calls '
             f'(+{cfg["tail_s"] * 1000:g} ms mean), control {cfg["control_rate_hz"]:g} Hz, '
             f'{len(cfg["seeds"])} seeds x {cfg["duration_s"]:g} s'
             + (f'; flow residuals from {summary["flow_package"]}'
                if summary.get('flow_package') else ''),
             'dvel/dacc = change of the command\'s velocity/acceleration at a chunk switch '
             'beyond the reference\'s; mode = rms distance from the nearer mode (bimodal); '
             'under = chunks whose delay exceeded the estimate; on time / late = dvel max '
             'at the switches of chunks within / past their estimated delay',
             f'{"scenario":<10}{"strategy":<30}{"track":>8}{"dvel max":>10}{"dvel mean":>10}'
             f'{"dacc max":>10}{"mode":>8}{"stall":>7}{"under":>7}{"on time":>9}{"late":>7}',
             f'{"":<10}{"":<30}{"mrad":>8}{"rad/s":>10}{"rad/s":>10}{"rad/s2":>10}'
             f'{"mrad":>8}{"s":>7}{"":>7}{"rad/s":>9}{"rad/s":>7}']
    for r in summary['results']:
        label = Case(r['strategy'], r['latency_compensation']).label
        mode = '-' if r['mode_rms_rad'] is None else f'{r["mode_rms_rad"] * 1000:.1f}'
        lines.append(f'{r["scenario"]:<10}{label:<30}{r["tracking_rms_rad"] * 1000:>8.2f}'
                     f'{r["dvel_max_rad_s"]:>10.3f}{r["dvel_mean_rad_s"]:>10.3f}'
                     f'{r["dacc_max_rad_s2"]:>10.1f}{mode:>8}{r["stall_s"]:>7.3f}'
                     f'{r["under_estimated"]:>7.1%}{_opt(r.get("dvel_max_on_time_rad_s")):>9}'
                     f'{_opt(r.get("dvel_max_late_rad_s")):>7}')
    for sc, h in summary['headline'].items():
        lines.append(f'{sc}: smoothest {h["best"]}, max dvel {h["dvel_reduction_x"]:.1f}x '
                     f'smaller than {h["baseline"]}, tracking rms x{h["tracking_rms_ratio"]:.2f}')
    return '\n'.join(lines)


def markdown_table(summary: dict) -> str:
    out = ['| scenario | strategy | track rms mrad | dvel max / mean rad/s | dacc max rad/s² '
           '| mode rms mrad | stall s |', '|---|---|---|---|---|---|---|']
    for r in summary['results']:
        mode = '–' if r['mode_rms_rad'] is None else f'{r["mode_rms_rad"] * 1000:.1f}'
        out.append(f'| {r["scenario"]} | {Case(r["strategy"], r["latency_compensation"]).label}'
                   f' | {r["tracking_rms_rad"] * 1000:.2f} | {r["dvel_max_rad_s"]:.3f} / '
                   f'{r["dvel_mean_rad_s"]:.3f} | {r["dacc_max_rad_s2"]:.1f} | {mode} | '
                   f'{r["stall_s"]:.3f} |')
    return '\n'.join(out)


def write_plots(summary: dict, out_dir: str | Path) -> list[Path]:
    """One bar chart per scenario: max and mean dvel, tracking rms (and mode rms)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for sc in dict.fromkeys(r['scenario'] for r in summary['results']):
        rows = [r for r in summary['results'] if r['scenario'] == sc]
        labels = [Case(r['strategy'], r['latency_compensation']).label for r in rows]
        x = np.arange(len(rows))
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
        ax1.bar(x - 0.2, [r['dvel_max_rad_s'] for r in rows], 0.4, label='max')
        ax1.bar(x + 0.2, [r['dvel_mean_rad_s'] for r in rows], 0.4, label='mean')
        ax1.set_ylabel('velocity change at switch (rad/s)')
        ax1.legend()
        ax2.bar(x - 0.2, [r['tracking_rms_rad'] * 1000 for r in rows], 0.4, label='tracking')
        if rows[0]['mode_rms_rad'] is not None:
            ax2.bar(x + 0.2, [r['mode_rms_rad'] * 1000 for r in rows], 0.4,
                    label='off both modes')
        ax2.set_ylabel('rms (mrad)')
        ax2.legend()
        for ax in (ax1, ax2):
            ax.set_xticks(x, labels, rotation=35, ha='right', fontsize=7)
        fig.suptitle(f'queue bench, {sc} chunks')
        fig.tight_layout()
        path = out / f'queue_{sc}.png'
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
