"""`vla-ros`: the command-line entry point. Each subcommand imports its own dependencies
lazily, so `vla-ros inspect` works on a robot computer without torch."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from vla_ros import __version__

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]] = {}


def command(name: str, help_text: str):
    """Registers `fn(args) -> exit code` with `setup(parser)` as a subcommand."""

    def wrap(setup: Callable[[argparse.ArgumentParser], None]):
        def bind(handler: Handler) -> Handler:
            _COMMANDS[name] = (help_text, setup, handler)
            return handler

        return bind

    return wrap


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('target', help="a model package; 'queue' for the chunk-execution bench; "
                   "'node' for the ROS node under load (with --model)")
    p.add_argument('--json', action='store_true', help='print machine-readable JSON')
    p.add_argument('--out', help='also write the JSON to this file')
    k = p.add_argument_group('package bench')
    k.add_argument('--runs', type=int, default=20, help='timed inferences per mode')
    k.add_argument('--warmup', type=int, default=3, help='untimed inferences first')
    k.add_argument('--device', default='cpu', choices=('cpu', 'cuda', 'tensorrt'),
                   help='onnxruntime execution provider')
    k.add_argument('--precision', default='fp32', choices=('fp32', 'fp16'))
    k.add_argument('--threads', type=int, help='intra-op threads (default: all cores)')
    k.add_argument('--threshold-set', action='append', default=[],
                   help='early-exit set to run (repeatable; default: the default set and its '
                   'siblings of other budgets)')
    k.add_argument('--deadline-ms', type=float, help='also run deadline mode')
    k.add_argument('--torch-checkpoint', help='also run torch eager of the same weights')
    k.add_argument('--data', help='observation set (.npz) instead of synthetic frames')
    k.add_argument('--plots', help='write latency and exit histograms (PNG) here')
    k.add_argument('--overhead-cameras', type=int, default=3, help='VGA frames per cycle of '
                   'the overhead figure (frames -> model input, queue, safety, publish)')
    n = p.add_argument_group('node bench')
    n.add_argument('--model', help='package the node serves')
    n.add_argument('--robot', default='xarm6')
    n.add_argument('--controller', default='')
    n.add_argument('--control-rate-hz', type=float, default=100.0)
    n.add_argument('--swap-to', help='package to hot-swap to after the timed run')
    n.add_argument('--control', choices=('thread', 'process'),
                   help='where the control loop runs (the control_process parameter; default: '
                   "the node's default)")
    n.add_argument('--param', action='append', default=[], metavar='NAME=VALUE',
                   help='vla_policy parameter (repeatable), e.g. control_rt_priority=50')
    q = p.add_argument_group('queue bench')
    q.add_argument('--latency-ms', type=float, default=150.0, help='injected latency')
    q.add_argument('--jitter-ms', type=float, default=30.0, help='std of the latency jitter')
    q.add_argument('--duration-s', type=float, default=20.0, help='simulated time per run')
    q.add_argument('--seeds', type=int, default=3, help='runs per case')
    q.add_argument('--interpolation', choices=('linear', 'cubic'), default='linear')
    q.add_argument('--tail-prob', type=float, default=0.05, help='share of slow calls')
    q.add_argument('--tail-ms', type=float, default=150.0,
                   help='mean extra latency of a slow call (exponential)')
    q.add_argument('--flow-package', help='flow_dit package whose head samples the residuals '
                   'of the flow scenario (rtc_inpaint, and rtc_guided with --rtc-vjp)')
    q.add_argument('--scenario', action='append', choices=('unimodal', 'bimodal', 'flow'),
                   help='scenarios to run (repeatable; default: all available)')


@command('bench', 'measure latency, compute and chunk execution')(_bench_args)
def _bench(args: argparse.Namespace) -> int:
    import json

    if args.target == 'node':
        return _bench_node(args)
    if args.target != 'queue':
        return _bench_package(args)
    from vla_ros.runtime.bench.queue_bench import (
        QueueBenchConfig,
        default_cases,
        run_bench,
        summarize,
    )
    from vla_ros.runtime.bench.queue_report import format_table, write_plots

    cfg = QueueBenchConfig(latency_s=args.latency_ms / 1000, jitter_s=args.jitter_ms / 1000,
                           duration_s=args.duration_s, seeds=tuple(range(args.seeds)),
                           interpolation=args.interpolation, tail_prob=args.tail_prob,
                           tail_s=args.tail_ms / 1000)
    flow = None
    if args.flow_package:
        from vla_ros.runtime.bench.queue_sources import FlowResidual

        flow = FlowResidual(args.flow_package, cfg.dof, cfg.flow_rms_rad)
    scenarios = tuple(args.scenario or [s for s in ('unimodal', 'bimodal', 'flow')
                                        if s != 'flow' or flow is not None])
    if 'flow' in scenarios and flow is None:
        print('vla-ros bench queue: the flow scenario needs --flow-package', file=sys.stderr)
        return 2
    cases = default_cases(scenarios)
    if flow is not None and not flow.has_vjp:
        cases = [c for c in cases if c.strategy != 'rtc_guided']
    summary = summarize(cfg, run_bench(cfg, cases, flow), args.flow_package or '')
    text = json.dumps(summary, indent=1)
    if args.out:
        with open(args.out, 'w', encoding='utf-8') as f:
            f.write(text + '\n')
    if args.plots:
        write_plots(summary, args.plots)
    print(text if args.json else format_table(summary))
    return 0


def _bench_node(args: argparse.Namespace) -> int:
    import json

    from vla_ros.ros.evaluation.node_bench import run_node_bench

    if not args.model:
        print('vla-ros bench node: --model PACKAGE is required', file=sys.stderr)
        return 2
    import yaml

    params = {}
    for item in args.param:
        name, sep, value = item.partition('=')
        if not sep:
            print(f'vla-ros bench node: --param {item!r} is not NAME=VALUE', file=sys.stderr)
            return 2
        params[name] = yaml.safe_load(value)
    if args.control:
        params['control_process'] = args.control == 'process'
    report = run_node_bench(args.model, args.robot, args.controller, args.duration_s,
                            args.control_rate_hz, args.swap_to, params=params,
                            progress=(lambda _: None) if args.json else print)
    text = json.dumps(report, indent=1)
    if args.out:
        with open(args.out, 'w', encoding='utf-8') as f:
            f.write(text + '\n')
    if args.json:
        print(text)
    return 0


def _bench_package(args: argparse.Namespace) -> int:
    import json

    from vla_ros.runtime.bench.package_bench import (
        BenchConfig,
        bench_package,
        save_report,
        write_plots,
    )
    from vla_ros.runtime.package.loader import load_package

    pkg = load_package(args.target)
    cfg = BenchConfig(warmup=args.warmup, runs=args.runs, device=args.device,
                      precision=args.precision, threads=args.threads,
                      threshold_sets=tuple(args.threshold_set), deadline_ms=args.deadline_ms,
                      torch_checkpoint=args.torch_checkpoint, data=args.data)
    quiet = args.json
    extra = {}
    if cfg.torch_checkpoint:
        from vla_ros.export.torch_backend import bench_backends

        extra = bench_backends(cfg)
    report = bench_package(pkg, cfg, progress=(lambda _: None) if quiet else print,
                           extra_backends=extra, memory_refs={
                               'torch': 'vla_ros.export.torch_backend:bench_backends'})
    from vla_ros.ros.evaluation.overhead_step import package_overhead

    report.update(package_overhead(str(pkg.root), args.overhead_cameras))
    if args.out:
        save_report(report, args.out)
    if args.plots:
        for path in write_plots(report, args.plots):
            if not quiet:
                print(f'bench: wrote {path}')
    if quiet:
        print(json.dumps(report, indent=1))
    return 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--out', default='out/demo', help='output folder (report, GIF, plots)')
    p.add_argument('--episodes', type=int, default=5, help='episodes to run')
    p.add_argument('--task', choices=('touch', 'pick', 'pick_place'), default='touch',
                   help='the tabletop task (pick tasks: models/pick-ROBOT)')
    p.add_argument('--model', help='package to serve (default: models/default-ROBOT if '
                   'shipped, else models/default)')
    p.add_argument('--robot', default='xarm6', help='simulated robot (xarm6, fr3, panda)')
    p.add_argument('--duration-s', type=float, default=15.0,
                   help='run time of the random-weight demo (only without models/default)')


@command('demo', 'run the closed loop under the full ROS pipeline and report')(_demo_args)
def _demo(args: argparse.Namespace) -> int:
    from vla_ros.ros.evaluation.demo import run_demo

    try:
        run_demo(args.out, args.episodes, args.model, args.duration_s, args.robot,
                 task=args.task)
    except FileNotFoundError as e:
        print(f'vla-ros demo: {e}', file=sys.stderr)
        return 2
    return 0


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--model', help='package to serve (default: models/default-ROBOT if '
                   'shipped, else models/default)')
    p.add_argument('--robot', default='xarm6', help='simulated robot (xarm6, fr3, panda)')
    p.add_argument('--episodes', type=int, default=20, help='episodes per variant')
    p.add_argument('--seed', type=int, default=1000, help='layout seed of the first episode')
    p.add_argument('--task', choices=('touch', 'pick', 'pick_place'), default='touch',
                   help='touch tasks, or picking / pick and place in the physics tabletop '
                   '(default model: models/pick-ROBOT)')
    p.add_argument('--timeout-s', type=float, help='episode time limit (default: 12 s for '
                   'touch, 30 s for the pick tasks)')
    p.add_argument('--added-latency-ms', type=float, default=0.0,
                   help='delay every chunk this long before it is queued')
    p.add_argument('--param', action='append', default=[], metavar='NAME=VALUE',
                   help='vla_policy parameter for every variant (repeatable)')
    p.add_argument('--variant', action='append', default=[], metavar='LABEL:NAME=VALUE,...',
                   help='a configuration to compare on the same episodes (repeatable), e.g. '
                   'full:policy_mode=full')
    p.add_argument('--out', help='write the report JSON here')
    p.add_argument('--json', action='store_true', help='print the report as JSON')


@command('eval', 'success rate of a model on the simulated tabletop tasks, per '
         'configuration')(
    _eval_args)
def _eval(args: argparse.Namespace) -> int:
    import json

    from vla_ros.ros.evaluation.evaluate import evaluate, parse_assignments

    try:
        base = parse_assignments(args.param)
        variants = [(v.split(':', 1)[0], parse_assignments(v.split(':', 1)[1].split(',')))
                    if ':' in v else (v, {}) for v in args.variant] or [('default', {})]
    except ValueError as e:
        print(f'vla-ros eval: {e}', file=sys.stderr)
        return 2
    if args.added_latency_ms:
        base['added_latency_ms'] = args.added_latency_ms
    timeout_s = args.timeout_s or (12.0 if args.task == 'touch' else 30.0)
    report = evaluate(args.model, args.robot, args.episodes, args.seed, timeout_s, base,
                      variants, progress=(lambda _: None) if args.json else print,
                      task=args.task)
    if args.out:
        from pathlib import Path

        Path(args.out).write_text(json.dumps(report, indent=1) + '\n')
    if args.json:
        print(json.dumps(report, indent=1))
    return 0


def _make_default_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--out', default='models/default', help='package directory to write')
    p.add_argument('--work', default='out/default-build', help='cache and scratch folder')
    p.add_argument('--robot', default='xarm6', help='embodiment of the demonstrations')
    p.add_argument('--episodes', type=int, default=1200, help='expert demonstrations (a '
                   'third as many layouts, each with every block as the target)')
    p.add_argument('--minutes', type=float, default=25.0, help='training time budget')
    p.add_argument('--max-steps', type=int, default=20000, help='training step cap')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--head', choices=('mlp_regression', 'flow_dit'), default='mlp_regression',
                   help='action head: the regression head of the shipped models, or a '
                   'flow-matching DiT (exported with the VJP graph rtc_guided needs)')
    p.add_argument('--task', choices=('touch', 'pick', 'pick_place'), default='touch',
                   help='touch tasks (kinematic scene), or picking / pick and place in the '
                   'physics tabletop (the model then commands the gripper too)')
    p.add_argument('--resume', action='store_true', help='train on from the work folder\'s '
                   'last run (its checkpoint) for --minutes more')


@command('make-default', 'collect demonstrations, train, export and calibrate the default '
         'model')(_make_default_args)
def _make_default(args: argparse.Namespace) -> int:
    from vla_ros.sim.train import make_default

    make_default(args.out, args.work, args.robot, args.episodes, args.minutes, args.max_steps,
                 args.seed, head=args.head, task=args.task, resume=args.resume)
    return 0


def build_parser() -> argparse.ArgumentParser:
    _load_commands()
    parser = argparse.ArgumentParser(
        prog='vla-ros', description='Serve Vision-Language-Action policies on ROS 2.')
    parser.add_argument('--version', action='version', version=f'vla_ros {__version__}')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for name, (help_text, setup, handler) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        setup(p)
        p.set_defaults(handler=handler)
    return parser


def _load_commands() -> None:
    """Imports the modules that register the other subcommands (cheap: they import their
    own dependencies only when run)."""
    import vla_ros.cli_package  # noqa: F401  (inspect, export, convert, calibrate)


def main(argv: Sequence[str] | None = None) -> int:
    from vla_ros.runtime.errors import PackageError

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except PackageError as e:
        print(f'vla-ros {args.command}: invalid model package ({e.kind}): {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'vla-ros {args.command}: interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':
    # Run as `python -m vla_ros.cli`: use the imported module, the one the other command
    # modules register into.
    from vla_ros.cli import main as _main

    sys.exit(_main())
