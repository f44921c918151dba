"""What the launch files decide, as plain functions (the `launch` package is not needed to
test them). launch/vla.launch.py declares the arguments below and turns `nodes()` into
launch_ros Node actions; the per-robot launch files only fix `robot`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SCENE_ROBOTS = ('xarm6', 'fr3', 'panda')  # robots with a tabletop scene (vla_ros/sim/scene.py)
CONFIGS = {  # robot -> config file under share/vla_ros/config
    'xarm6': 'xarm6.yaml', 'fr3': 'fr3.yaml', 'panda': 'panda.yaml', 'ur5': 'ur5.yaml',
    'ur5e': 'ur5e.yaml', 'agibot_g1': 'agibot_g1.yaml',
}


@dataclass(frozen=True)
class Argument:
    name: str
    default: str
    description: str
    choices: tuple[str, ...] = ()


ARGUMENTS = (
    Argument('robot', 'xarm6', 'Robot to drive.', tuple(CONFIGS)),
    Argument('model', '', 'Model package directory (model_path). Empty: the shipped default '
             'model.'),
    Argument('config', '', 'Parameter file; empty: config/<robot>.yaml.'),
    Argument('instruction', '', 'Initial language instruction.'),
    Argument('autostart', 'true', 'Configure and activate without a lifecycle manager.',
             ('true', 'false')),
    Argument('engage', 'false', 'Engage on activation (otherwise call ~/engage).',
             ('true', 'false')),
    Argument('use_sim', 'false', 'Also start the simulated robot (no hardware).',
             ('true', 'false')),
    Argument('sim_scene', 'tabletop', 'With use_sim: the tabletop touch tasks (xarm6, fr3, '
             'panda: cameras rendered from the arm, instructions from the task) or none '
             '(sim_cameras streams).', ('tabletop', 'none')),
    Argument('fastdds_shm', 'true', 'Use the 16 MB shared-memory FastDDS profile for camera '
             'transport (set for every process this launch starts).', ('true', 'false')),
    Argument('namespace', '', 'Namespace of the vla_policy node.'),
    Argument('log_level', 'info', 'Logging level.', ('debug', 'info', 'warn', 'error')),
)


def share_dir() -> Path:
    """share/vla_ros of an installed package, or the source tree when run from it."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            return Path(get_package_share_directory('vla_ros'))
        except (PackageNotFoundError, OSError):  # OSError: no AMENT_PREFIX_PATH at all
            pass
    except ImportError:
        pass
    return Path(__file__).resolve().parents[2]


def _flag(value: str) -> bool:
    if value.lower() not in ('true', 'false'):
        raise ValueError(f'expected true or false, got {value!r}')
    return value.lower() == 'true'


def config_file(robot: str, override: str = '', root: Path | None = None) -> Path:
    if robot not in CONFIGS:
        raise ValueError(f'unknown robot {robot!r}; choose one of {sorted(CONFIGS)}')
    path = Path(override) if override else (root or share_dir()) / 'config' / CONFIGS[robot]
    if not path.is_file():
        raise FileNotFoundError(f'parameter file {path} does not exist')
    return path


def default_model(root: Path | None = None, robot: str | None = None) -> Path:
    """models/default-<robot> where the package ships one for that robot, else
    models/default (the xArm6 model)."""
    models = (root or share_dir()) / 'models'
    own = models / f'default-{robot}'
    return own if robot and (own / 'manifest.json').is_file() else models / 'default'


def environment(args: dict[str, str], root: Path | None = None) -> dict[str, str]:
    """Environment variables for every process of the launch."""
    if not _flag(args.get('fastdds_shm', 'true')):
        return {}
    return {'FASTRTPS_DEFAULT_PROFILES_FILE': str((root or share_dir()) / 'config' /
                                                  'fastdds_shm.xml')}


def nodes(args: dict[str, str], root: Path | None = None) -> list[dict]:
    """The nodes to start, as keyword arguments of launch_ros.actions.Node."""
    robot = args.get('robot', 'xarm6')
    params_file = config_file(robot, args.get('config', ''), root)
    overrides: dict = {'robot': robot,
                       'model_path': args.get('model') or str(default_model(root, robot)),
                       'autostart': _flag(args.get('autostart', 'true')),
                       'engage_on_activate': _flag(args.get('engage', 'false'))}
    if args.get('instruction'):
        overrides['instruction'] = args['instruction']
    log = ['--ros-args', '--log-level', args.get('log_level', 'info')]
    out = [dict(package='vla_ros', executable='vla_policy', name='vla_policy',
                namespace=args.get('namespace', ''), output='screen',
                parameters=[str(params_file), overrides], arguments=log)]
    if _flag(args.get('use_sim', 'false')):
        scene = args.get('sim_scene', 'tabletop') == 'tabletop' and robot in SCENE_ROBOTS
        sim = {'robot': robot}
        if scene:
            ns = args.get('namespace', '').strip('/')
            sim.update(scene='tabletop', instruction_topic=(f'/{ns}' if ns else '')
                       + '/vla_policy/instruction')
        out.append(dict(package='vla_ros', executable='sim_robot', name='sim_robot',
                        output='screen', parameters=[sim], arguments=log))
        if not scene:
            out.append(dict(package='vla_ros', executable='sim_cameras', name='sim_cameras',
                            output='screen', parameters=[{'camera_names': ['scene', 'wrist']}],
                            arguments=log))
    return out


def launch_configurations_to_args(configs: dict[str, str]) -> dict[str, str]:
    """The launch context's values with the declared defaults filled in."""
    out = {a.name: a.default for a in ARGUMENTS}
    out.update({k: v for k, v in configs.items() if k in out})
    for a in ARGUMENTS:
        if a.choices and out[a.name] not in a.choices:
            raise ValueError(f'{a.name}:={out[a.name]} is not one of {list(a.choices)}')
    return out

