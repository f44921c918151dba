"""The model-package subcommands of `vla-ros`: inspect, export, convert, calibrate. Each
imports its own dependencies when run (`vla-ros inspect` needs no torch)."""

from __future__ import annotations

import argparse
import sys

from vla_ros.cli import command


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
    p.add_argument('--jobs', type=int, default=None, metavar='N',
                   help='worker processes exporting graphs side by side (default: as many '
                   'as CPUs, graphs and memory allow; 1: one process)')
    p.add_argument('--save-checkpoint', metavar='DIR',
                   help='with --preset: also write the random-weight checkpoint (for torch '
                   'side-by-side benchmarks)')
    p.add_argument('--rtc-vjp', action='store_true',
                   help="also export the flow head step's vector-Jacobian product "
                   '(merge_strategy rtc_guided needs it; flow_dit heads)')


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
        spec = replace(spec, precisions=tuple(args.precision), name=args.name or spec.name,
                       rtc_vjp=args.rtc_vjp)
        if args.save_checkpoint:
            from vla_ros.export.checkpoint import save_checkpoint

            save_checkpoint(args.save_checkpoint, model, spec, tok)
        export_package(model, args.out, spec, tok, verify=not args.no_verify,
                       jobs=args.jobs)
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
                                          save_checkpoint=None, rtc_vjp=False, jobs=None))
    return 0


def _calibrate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('package', help='model package to write threshold sets into')
    p.add_argument('--data', required=True, help='observation set (.npz, see docs)')
    p.add_argument('--metrics', nargs='+', default=['cosine', 'l2', 'mean_abs', 'max_abs'])
    p.add_argument('--distributions', nargs='+', default=['exp', 'gauss', 'gamma'])
    p.add_argument('--budgets', nargs='+', type=float, default=[0.25, 0.5, 0.75],
                   help='backbone compute fractions to calibrate for')
    p.add_argument('--per-step', action='store_true',
                   help="one sample per horizon step (A1's ActionValueNet)")
    p.add_argument('--all-dims', action='store_true', help='metric over padded dims too (A1)')
    p.add_argument('--skip-first', action='store_true', help='no exit at decision 1 (A1 7B)')
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
                                default=args.default, per_step=args.per_step,
                                all_dims=args.all_dims, skip_first=args.skip_first)
        pkg = calibrate_package(args.package, args.data, cfg)
    except ValueError as e:
        print(f'vla-ros calibrate: {e}', file=sys.stderr)
        return 2
    for ts in pkg.manifest.exits.threshold_sets:
        if ts.calibration.get('distribution') == 'exp' and ts.metric == 'cosine':
            print(f'  {ts.name}: expected compute {ts.expected_compute_fraction:.2f}')
    return 0
