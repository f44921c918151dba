"""What the launch files decide, as plain functions (the `launch` package is not needed to
test them). launch/vla.launch.py declares the arguments below and turns `nodes()` into
launch_ros Node actions; the per-robot launch files only fix `robot`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Robots with a tabletop scene (vla_ros/sim/scene.py, SCENE_OF).
SCENE_ROBOTS = ('xarm6', 'fr3', 'panda', 'fer', 'ur5e', 'agibot_g1')
CONFIGS = {  # robot -> config file under share/vla_ros/config
    'xarm6': 'xarm6.yaml', 'fr3': 'fr3.yaml', 'panda': 'panda.yaml', 'fer': 'fer.yaml',
    'ur5': 'ur5.yaml', 'ur5e': 'ur5e.yaml', 'agibot_g1': 'agibot_g1.yaml',
}
# models/default is trained on this robot; every other robot needs models/default-<robot>
# (or model:=), since another arm's model would only fail once it is loaded.
DEFAULT_MODEL_ROBOT = 'xarm6'
PROFILE_VARIABLE = 'FASTRTPS_DEFAULT_PROFILES_FILE'


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
    Argument('sim_scene', 'tabletop', 'With use_sim: the tabletop (xarm6, fr3, panda, fer, '
             'ur5e, agibot_g1: cameras rendered from the scene, instructions from the task) '
             'or none (sim_cameras streams).', ('tabletop', 'none')),
    Argument('sim_task', 'touch', 'The tabletop task: touch (kinematic), or pick / '
             'pick_place (contact physics, the gripper commanded too; the default model is '
             'then models/pick-<robot>).', ('touch', 'pick', 'pick_place')),
    Argument('fastdds_shm', 'auto', 'The 16 MB shared-memory FastDDS profile for camera '
             f'transport, as {PROFILE_VARIABLE} of every process this launch starts: auto '
             'sets it unless that variable is already set, true replaces yours, false never '
             'sets it.', ('auto', 'true', 'false')),
    Argument('namespace', '', 'Namespace of every node this launch starts; all their topics '
             'are relative, so two robots in two namespaces never share one.'),
    Argument('remap', '', 'Topic remappings of vla_policy, FROM:=TO separated by ";" (e.g. '
             '"joint_states:=/arm/joint_states;camera/scene/image_raw:=/cam0/image_raw").'),
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


def default_model(root: Path | None = None, robot: str | None = None,
                  task: str = 'touch') -> Path:
    """models/default-<robot> where the package ships one for that robot; models/default
    (the xArm6 model) for the xArm6 or no robot. For any other robot without its own model
    this is the models/default-<robot> path that does not exist: callers check for it.
    The pick tasks' models (they command the gripper too): models/pick-<robot>."""
    models = (root or share_dir()) / 'models'
    if task != 'touch':
        return models / f'pick-{robot or DEFAULT_MODEL_ROBOT}'
    own = models / f'default-{robot}'
    if robot and (own / 'manifest.json').is_file():
        return own
    return models / 'default' if robot in (None, '', DEFAULT_MODEL_ROBOT) else own


def shipped_model(robot: str, root: Path | None = None, task: str = 'touch') -> Path:
    """The default model for `robot` (and task), or FileNotFoundError saying to pass
    model:=."""
    path = default_model(root, robot, task)
    if not (path / 'manifest.json').is_file():
        which = ('default model' if task == 'touch' else f'{task} model')
        note = f'; models/default is for the {DEFAULT_MODEL_ROBOT} only' if task == 'touch' \
            else ''
        raise FileNotFoundError(
            f'robot:={robot} has no shipped {which} ({path} does not exist{note}): pass '
            f'model:=<model package directory> trained for the {robot}')
    return path


def _profile(args: dict[str, str], root: Path | None,
             env: Mapping[str, str] | None) -> tuple[dict[str, str], list[str]]:
    mode = args.get('fastdds_shm', 'auto')
    if mode not in ('auto', 'true', 'false'):
        raise ValueError(f'fastdds_shm: expected auto, true or false, got {mode!r}')
    ours = str((root or share_dir()) / 'config' / 'fastdds_shm.xml')
    theirs = (os.environ if env is None else env).get(PROFILE_VARIABLE, '')
    if mode == 'false' or theirs == ours:
        return {}, []
    if not theirs:
        return {PROFILE_VARIABLE: ours}, []
    if mode == 'auto':
        return {}, [f'{PROFILE_VARIABLE}={theirs} is kept (yours); fastdds_shm:=true '
                    f'would replace it with {ours}']
    return {PROFILE_VARIABLE: ours}, [f'fastdds_shm:=true: {PROFILE_VARIABLE} set to {ours}, '
                                      f'replacing yours ({theirs})']


def environment(args: dict[str, str], root: Path | None = None,
                env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment variables for every process of the launch. `env` is the environment the
    launch runs in (default os.environ): a FastDDS profile the user chose there is kept
    unless fastdds_shm:=true."""
    return _profile(args, root, env)[0]


def environment_log(args: dict[str, str], root: Path | None = None,
                    env: Mapping[str, str] | None = None) -> list[str]:
    """Lines for the launch log about what environment() kept or replaced."""
    return _profile(args, root, env)[1]


def nodes(args: dict[str, str], root: Path | None = None) -> list[dict]:
    """The nodes to start, as keyword arguments of launch_ros.actions.Node."""
    robot = args.get('robot', 'xarm6')
    params_file = config_file(robot, args.get('config', ''), root)
    task = args.get('sim_task', 'touch') if _flag(args.get('use_sim', 'false')) else 'touch'
    overrides: dict = {'robot': robot,
                       'model_path': args.get('model') or str(shipped_model(robot, root, task)),
                       'autostart': _flag(args.get('autostart', 'true')),
                       'engage_on_activate': _flag(args.get('engage', 'false'))}
    if args.get('instruction'):
        overrides['instruction'] = args['instruction']
    log = ['--ros-args', '--log-level', args.get('log_level', 'info')]
    ns = namespace(args.get('namespace', ''))
    out = [dict(package='vla_ros', executable='vla_policy', name='vla_policy', namespace=ns,
                output='screen', parameters=[str(params_file), overrides], arguments=log,
                remappings=remappings(args.get('remap', '')))]
    if _flag(args.get('use_sim', 'false')):
        # The simulated peers share the namespace, so each robot's sim talks to its own
        # policy node (their topic names are relative too).
        scene = args.get('sim_scene', 'tabletop') == 'tabletop' and robot in SCENE_ROBOTS
        sim = {'robot': robot}
        if scene:
            sim['scene'] = 'tabletop'
            if task != 'touch':
                sim['task'] = task
        out.append(dict(package='vla_ros', executable='sim_robot', name='sim_robot',
                        namespace=ns, output='screen', parameters=[sim], arguments=log))
        if not scene:
            out.append(dict(package='vla_ros', executable='sim_cameras', name='sim_cameras',
                            namespace=ns, output='screen',
                            parameters=[{'camera_names': ['scene', 'wrist']}], arguments=log))
    return out


def namespace(value: str) -> str:
    """'' or '/a/b' from 'a/b', '/a/b/' ...; ValueError for a name ROS would refuse."""
    parts = [p for p in value.strip().strip('/').split('/') if p] if value.strip() else []
    for p in parts:
        if not (p[0].isalpha() or p[0] == '_') or not all(c.isalnum() or c == '_' for c in p):
            raise ValueError(f'namespace:={value!r}: {p!r} is not a valid ROS name (letters, '
                             'digits and _, not starting with a digit)')
    return '/' + '/'.join(parts) if parts else ''


def remappings(value: str) -> list[tuple[str, str]]:
    """'a:=b;c:=d' -> [('a', 'b'), ('c', 'd')]; ValueError naming a malformed entry."""
    out = []
    for entry in (e.strip() for e in value.split(';')):
        if not entry:
            continue
        src, sep, dst = entry.partition(':=')
        if not sep or not src.strip() or not dst.strip() or ' ' in entry:
            raise ValueError(f'remap:={value!r}: {entry!r} is not FROM:=TO')
        out.append((src.strip(), dst.strip()))
    return out


def launch_configurations_to_args(configs: dict[str, str]) -> dict[str, str]:
    """The launch context's values with the declared defaults filled in."""
    out = {a.name: a.default for a in ARGUMENTS}
    out.update({k: v for k, v in configs.items() if k in out})
    for a in ARGUMENTS:
        if a.choices and out[a.name] not in a.choices:
            raise ValueError(f'{a.name}:={out[a.name]} is not one of {list(a.choices)}')
    return out

