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


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('package', help='model package directory')
    p.add_argument('--no-verify', action='store_true',
                   help='skip hashing the files (sizes are still checked)')
    p.add_argument('--json', action='store_true', help='print the manifest as JSON')


@command('inspect', 'validate a model package and summarize it')(_inspect_args)
def _inspect(args: argparse.Namespace) -> int:
    import json

    from vla_ros.runtime.package.loader import load_package
    from vla_ros.runtime.package.summary import describe

    pkg = load_package(args.package, verify_hashes=not args.no_verify)
    print(json.dumps(pkg.manifest.to_dict(), indent=1) if args.json else describe(pkg))
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('source', nargs='?', help='vla_ros checkpoint directory '
                   '(vla_ros_checkpoint.json, model.safetensors, tokenizer.json)')
    p.add_argument('out', help='package directory to create')
    p.add_argument('--preset', help='export a preset shape with random weights instead '
                   '(evo1-full)')
    p.add_argument('--precision', nargs='+', default=['fp32'], choices=('fp32', 'fp16'),
                   help='graph variants to write')
    p.add_argument('--no-verify', action='store_true',
                   help='skip checking each graph against torch in ONNX Runtime')
    p.add_argument('--name', help='package name (default: from the checkpoint)')
    p.add_argument('--save-checkpoint', metavar='DIR',
                   help='with --preset: also write the random-weight checkpoint (for torch '
                   'side-by-side benchmarks)')


@command('export', 'export a checkpoint to a model package (ONNX graphs + manifest)')(
    _export_args)
def _export(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from vla_ros.export.checkpoint import load_checkpoint, random_init
    from vla_ros.export.exporter import ExportError, export_package

    if (args.source is None) == (args.preset is None):
        print('vla-ros export: give a checkpoint directory or --preset, not both',
              file=sys.stderr)
        return 2
    try:
        model, spec, tok = (random_init(args.preset) if args.preset
                            else load_checkpoint(args.source))
        spec = replace(spec, precisions=tuple(args.precision), name=args.name or spec.name)
        if args.save_checkpoint:
            from vla_ros.export.checkpoint import save_checkpoint

            save_checkpoint(args.save_checkpoint, model, spec, tok)
        export_package(model, args.out, spec, tok, verify=not args.no_verify)
    except (ExportError, FileNotFoundError, ValueError) as e:
        print(f'vla-ros export: {e}', file=sys.stderr)
        return 2
    return 0


def _convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('source', help='checkpoint directory in the family\'s published layout')
    p.add_argument('out', help='vla_ros checkpoint directory to create')
    p.add_argument('--family', choices=('evo1', 'a1', 'vla_adapter', 'edgevla'),
                   help='default: detected from the files')
    p.add_argument('--export', metavar='OUT_PKG', help='then export it to this package')
    p.add_argument('--no-progress', action='store_true', help='no progress bars')


@command('convert', 'convert a published Evo-1 / A1 / VLA-Adapter / EdgeVLA checkpoint to a '
         'vla_ros checkpoint')(_convert_args)
def _convert(args: argparse.Namespace) -> int:
    from vla_ros.export.convert import ConvertError, convert_checkpoint

    try:
        out = convert_checkpoint(args.source, args.out, args.family,
                                 progress=not args.no_progress)
    except (ConvertError, FileNotFoundError) as e:
        print(f'vla-ros convert: {e}', file=sys.stderr)
        return 2
    print(f'vla-ros convert: wrote {out}')
    if args.export:
        return _export(argparse.Namespace(source=str(out), out=args.export, preset=None,
                                          precision=['fp32'], no_verify=False, name=None,
                                          save_checkpoint=None))
    return 0


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
    n.add_argument('--param', action='append', default=[], metavar='NAME=VALUE',
                   help='vla_policy parameter (repeatable), e.g. control_rt_priority=50')
    q = p.add_argument_group('queue bench')
    q.add_argument('--latency-ms', type=float, default=150.0, help='injected latency')
    q.add_argument('--jitter-ms', type=float, default=30.0, help='std of the latency jitter')
    q.add_argument('--duration-s', type=float, default=20.0, help='simulated time per run')
    q.add_argument('--seeds', type=int, default=3, help='runs per case')
    q.add_argument('--interpolation', choices=('linear', 'cubic'), default='linear')


@command('bench', 'measure latency, compute and chunk execution')(_bench_args)
def _bench(args: argparse.Namespace) -> int:
    import json

    if args.target == 'node':
        return _bench_node(args)
    if args.target != 'queue':
        return _bench_package(args)
    from vla_ros.runtime.bench.queue_bench import (
        QueueBenchConfig,
        format_table,
        run_bench,
        summarize,
    )

    cfg = QueueBenchConfig(latency_s=args.latency_ms / 1000, jitter_s=args.jitter_ms / 1000,
                           duration_s=args.duration_s, seeds=tuple(range(args.seeds)),
                           interpolation=args.interpolation)
    summary = summarize(cfg, run_bench(cfg))
    text = json.dumps(summary, indent=1)
    if args.out:
        with open(args.out, 'w', encoding='utf-8') as f:
            f.write(text + '\n')
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


def _calibrate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('package', help='model package to write threshold sets into')
    p.add_argument('--data', required=True, help='observation set (.npz, see docs)')
    p.add_argument('--metrics', nargs='+', default=['cosine', 'l2', 'mean_abs', 'max_abs'])
    p.add_argument('--distributions', nargs='+', default=['exp', 'gauss', 'gamma'])
    p.add_argument('--budgets', nargs='+', type=float, default=[0.25, 0.5, 0.75],
                   help='backbone compute fractions to calibrate for')
    p.add_argument('--no-truncated', action='store_true',
                   help='flow heads: fresh full solves per exit instead of truncated flow')
    p.add_argument('--default', help='name of the default threshold set')


@command('calibrate', 'calibrate early-exit thresholds on recorded observations')(
    _calibrate_args)
def _calibrate(args: argparse.Namespace) -> int:
    from vla_ros.runtime.policy.calibration import CalibrationConfig, calibrate_package

    try:
        cfg = CalibrationConfig(metrics=tuple(args.metrics),
                                distributions=tuple(args.distributions),
                                budgets=tuple(args.budgets), truncated=not args.no_truncated,
                                default=args.default)
        pkg = calibrate_package(args.package, args.data, cfg)
    except ValueError as e:
        print(f'vla-ros calibrate: {e}', file=sys.stderr)
        return 2
    for ts in pkg.manifest.exits.threshold_sets:
        if ts.calibration.get('distribution') == 'exp' and ts.metric == 'cosine':
            print(f'  {ts.name}: expected compute {ts.expected_compute_fraction:.2f}')
    return 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--out', default='out/demo', help='output folder (report, GIF, plots)')
    p.add_argument('--episodes', type=int, default=5, help='touch-task episodes to run')
    p.add_argument('--model', help='package to serve (default: models/default-ROBOT if '
                   'shipped, else models/default)')
    p.add_argument('--robot', default='xarm6', help='simulated robot (xarm6, fr3, panda)')
    p.add_argument('--duration-s', type=float, default=15.0,
                   help='run time of the random-weight demo (only without models/default)')


@command('demo', 'run the closed loop under the full ROS pipeline and report')(_demo_args)
def _demo(args: argparse.Namespace) -> int:
    from vla_ros.ros.evaluation.demo import run_demo

    run_demo(args.out, args.episodes, args.model, args.duration_s, args.robot)
    return 0


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--model', help='package to serve (default: models/default-ROBOT if '
                   'shipped, else models/default)')
    p.add_argument('--robot', default='xarm6', help='simulated robot (xarm6, fr3, panda)')
    p.add_argument('--episodes', type=int, default=20, help='episodes per variant')
    p.add_argument('--seed', type=int, default=1000, help='layout seed of the first episode')
    p.add_argument('--timeout-s', type=float, default=12.0, help='episode time limit')
    p.add_argument('--added-latency-ms', type=float, default=0.0,
                   help='delay every chunk this long before it is queued')
    p.add_argument('--param', action='append', default=[], metavar='NAME=VALUE',
                   help='vla_policy parameter for every variant (repeatable)')
    p.add_argument('--variant', action='append', default=[], metavar='LABEL:NAME=VALUE,...',
                   help='a configuration to compare on the same episodes (repeatable), e.g. '
                   'full:policy_mode=full')
    p.add_argument('--out', help='write the report JSON here')
    p.add_argument('--json', action='store_true', help='print the report as JSON')


@command('eval', 'success rate of a model on the simulated touch tasks, per configuration')(
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
    report = evaluate(args.model, args.robot, args.episodes, args.seed, args.timeout_s, base,
                      variants, progress=(lambda _: None) if args.json else print)
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


@command('make-default', 'collect demonstrations, train, export and calibrate the default '
         'model')(_make_default_args)
def _make_default(args: argparse.Namespace) -> int:
    from vla_ros.sim.train import make_default

    make_default(args.out, args.work, args.robot, args.episodes, args.minutes, args.max_steps,
                 args.seed)
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
    """Imports the modules that register the heavier subcommands (cheap: they import their
    own dependencies only when run)."""


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
    sys.exit(main())
