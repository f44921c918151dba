"""Launch files and per-robot parameter files. The `launch` package is not installable here:
the logic is tested directly, and the launch files are executed against stand-ins of the few
launch classes they use (recording what they were given)."""

import ast
import importlib.util
import re
import shutil
import sys
import types
from pathlib import Path

import pytest
import yaml

from vla_ros.adapters.robots import robot_spec
from vla_ros.ros import launch_logic
from vla_ros.ros.node.params import BY_NAME

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('robot', sorted(launch_logic.CONFIGS))
def test_each_robot_config_holds_valid_declared_parameters(robot):
    data = yaml.safe_load((ROOT / 'config' / launch_logic.CONFIGS[robot]).read_text())
    params = data['vla_policy']['ros__parameters']
    assert params['robot'] == robot
    for name, value in params.items():
        assert name in BY_NAME, f'{name} is not a vla_policy parameter'
        assert BY_NAME[name].check(value) == '', BY_NAME[name].check(value)
    assert params['controller'] in robot_spec(robot).controllers


def test_nodes_for_a_robot_use_its_config_and_the_given_model(tmp_path):
    args = launch_logic.launch_configurations_to_args({'robot': 'ur5e', 'model': '/m/pkg',
                                                       'instruction': 'push the block'})
    (node,) = launch_logic.nodes(args, root=ROOT)
    assert node['executable'] == 'vla_policy' and node['name'] == 'vla_policy'
    params_file, overrides = node['parameters']
    assert params_file.endswith('config/ur5e.yaml')
    assert overrides == {'robot': 'ur5e', 'model_path': '/m/pkg', 'autostart': True,
                         'engage_on_activate': False, 'instruction': 'push the block'}


def test_default_model_and_simulation_nodes():
    args = launch_logic.launch_configurations_to_args({'use_sim': 'true'})
    nodes = launch_logic.nodes(args, root=ROOT)
    assert [n['executable'] for n in nodes] == ['vla_policy', 'sim_robot']
    assert nodes[0]['parameters'][1]['model_path'] == str(ROOT / 'models' / 'default')
    assert nodes[1]['parameters'] == [{'robot': 'xarm6', 'scene': 'tabletop'}]


@pytest.mark.parametrize('scene', ['tabletop', 'none'])
@pytest.mark.parametrize('robot', ['xarm6', 'ur5e'])
def test_a_namespace_moves_the_policy_node_and_its_simulated_peers(scene, robot):
    args = launch_logic.launch_configurations_to_args(
        {'use_sim': 'true', 'namespace': 'left/', 'sim_scene': scene, 'robot': robot,
         'model': '/m/pkg'})
    nodes = launch_logic.nodes(args, root=ROOT)
    in_scene = scene == 'tabletop'  # both have a tabletop scene
    sims = ['sim_robot'] if in_scene else ['sim_robot', 'sim_cameras']
    assert [n['executable'] for n in nodes] == ['vla_policy', *sims]
    assert {n['namespace'] for n in nodes} == {'/left'}


def test_remap_argument_becomes_node_remappings():
    args = launch_logic.launch_configurations_to_args(
        {'remap': 'joint_states:=/arm/joint_states; camera/scene/image_raw:=/cam0/image_raw'})
    node = launch_logic.nodes(args, root=ROOT)[0]
    assert node['remappings'] == [('joint_states', '/arm/joint_states'),
                                  ('camera/scene/image_raw', '/cam0/image_raw')]


@pytest.mark.parametrize('value', ['joint_states', 'a:=', ':=b', 'a:=b c'])
def test_a_malformed_remap_is_a_clear_error(value):
    with pytest.raises(ValueError, match='FROM:=TO'):
        launch_logic.remappings(value)


@pytest.mark.parametrize('value', ['1robot', 'ro-bot', 'a//b b'])
def test_an_invalid_namespace_is_a_clear_error(value):
    with pytest.raises(ValueError, match='not a valid ROS name'):
        launch_logic.namespace(value)


def test_a_robot_with_its_own_shipped_model_gets_it(tmp_path):
    own = tmp_path / 'models' / 'default-fr3'
    own.mkdir(parents=True)
    (own / 'manifest.json').write_text('{}')
    assert launch_logic.default_model(tmp_path, 'fr3') == own
    assert launch_logic.default_model(tmp_path, 'xarm6') == tmp_path / 'models' / 'default'
    assert launch_logic.default_model(tmp_path) == tmp_path / 'models' / 'default'


def test_a_robot_without_its_own_model_never_gets_the_xarm6_model(tmp_path):
    (tmp_path / 'models' / 'default').mkdir(parents=True)
    (tmp_path / 'models' / 'default' / 'manifest.json').write_text('{}')
    assert launch_logic.default_model(tmp_path, 'ur5') == tmp_path / 'models' / 'default-ur5'


@pytest.mark.parametrize('robot', sorted(set(launch_logic.CONFIGS) - {'xarm6', 'fr3'}))
def test_launch_without_model_fails_at_once_for_a_robot_without_a_shipped_model(robot):
    args = launch_logic.launch_configurations_to_args({'robot': robot})
    with pytest.raises(FileNotFoundError, match=f'robot:={robot} has no shipped default '
                       r'model.*pass model:='):
        launch_logic.nodes(args, root=ROOT)
    (node,) = launch_logic.nodes({**args, 'model': '/m/pkg'}, root=ROOT)
    assert node['parameters'][1]['model_path'] == '/m/pkg'


def test_launch_without_model_fails_at_once_when_the_xarm6_model_is_not_installed(tmp_path):
    (tmp_path / 'config').mkdir()
    shutil.copy(ROOT / 'config' / 'xarm6.yaml', tmp_path / 'config')
    args = launch_logic.launch_configurations_to_args({})
    with pytest.raises(FileNotFoundError, match='pass model:='):
        launch_logic.nodes(args, root=tmp_path)


@pytest.mark.parametrize('robot', ['xarm6', 'fr3'])
def test_robots_with_a_shipped_model_launch_it_by_default(robot):
    args = launch_logic.launch_configurations_to_args({'robot': robot})
    (node,) = launch_logic.nodes(args, root=ROOT)
    expected = ROOT / 'models' / ('default' if robot == 'xarm6' else f'default-{robot}')
    assert node['parameters'][1]['model_path'] == str(expected)


def test_every_franka_arm_id_choice_launches(fake_launch):
    ld = _load(ROOT / 'launch' / 'franka.launch.py').generate_launch_description()
    arm_id = next(a for a in ld.args[0] if type(a).__name__ == 'DeclareLaunchArgument')
    assert arm_id.args[0] == 'arm_id' and 'fer' in arm_id.kwargs['choices']
    for choice in arm_id.kwargs['choices']:
        args = launch_logic.launch_configurations_to_args({'robot': choice,
                                                           'model': '/m/pkg'})
        (node,) = launch_logic.nodes(args, root=ROOT)
        assert node['parameters'][0].endswith(f'config/{choice}.yaml')
        assert robot_spec(choice).name == choice


def test_fer_config_drives_the_fer_joints_with_the_panda_limits():
    params = yaml.safe_load((ROOT / 'config' / 'fer.yaml').read_text())
    assert params['vla_policy']['ros__parameters']['controller'] == 'fer_arm_controller'
    fer, panda = robot_spec('fer'), robot_spec('panda')
    assert fer.joint_names == tuple(f'fer_joint{i}' for i in range(1, 8))
    assert [(j.lower, j.upper) for j in fer.joints] == [(j.lower, j.upper)
                                                        for j in panda.joints]


def test_scene_robots_are_those_the_sim_has_a_scene_for():
    from vla_ros.sim.scene import SCENE_OF

    assert set(launch_logic.SCENE_ROBOTS) == set(SCENE_OF)


def test_simulation_without_a_scene_streams_camera_test_images():
    for extra in ({'robot': 'ur5', 'model': '/m/pkg'}, {'sim_scene': 'none'}):
        args = launch_logic.launch_configurations_to_args({'use_sim': 'true', **extra})
        nodes = launch_logic.nodes(args, root=ROOT)
        assert [n['executable'] for n in nodes] == ['vla_policy', 'sim_robot', 'sim_cameras']
        assert 'scene' not in nodes[1]['parameters'][0]


PROFILE = 'FASTRTPS_DEFAULT_PROFILES_FILE'
OURS = str(ROOT / 'config' / 'fastdds_shm.xml')


def test_shared_memory_profile_is_set_by_default_when_the_user_has_none():
    args = launch_logic.launch_configurations_to_args({})
    env = launch_logic.environment(args, root=ROOT, env={})
    assert env == {PROFILE: OURS} and Path(OURS).is_file()
    assert launch_logic.environment_log(args, root=ROOT, env={}) == []


def test_a_users_own_profile_is_kept_by_default():
    args = launch_logic.launch_configurations_to_args({})
    user = {PROFILE: '/home/me/my_profile.xml'}
    assert launch_logic.environment(args, root=ROOT, env=user) == {}
    (line,) = launch_logic.environment_log(args, root=ROOT, env=user)
    assert '/home/me/my_profile.xml' in line and 'kept' in line


def test_a_users_own_profile_is_kept_when_it_comes_from_os_environ(monkeypatch):
    monkeypatch.setenv(PROFILE, '/home/me/my_profile.xml')
    assert launch_logic.environment({'fastdds_shm': 'auto'}, root=ROOT) == {}


def test_fastdds_shm_true_replaces_a_users_profile_and_logs_it():
    args = launch_logic.launch_configurations_to_args({'fastdds_shm': 'true'})
    user = {PROFILE: '/home/me/my_profile.xml'}
    assert launch_logic.environment(args, root=ROOT, env=user) == {PROFILE: OURS}
    (line,) = launch_logic.environment_log(args, root=ROOT, env=user)
    assert 'replacing yours (/home/me/my_profile.xml)' in line


def test_fastdds_shm_false_sets_no_profile():
    args = launch_logic.launch_configurations_to_args({'fastdds_shm': 'false'})
    assert launch_logic.environment(args, root=ROOT, env={}) == {}
    assert launch_logic.environment_log(args, root=ROOT, env={}) == []


def test_fastdds_profile_comment_names_the_real_launch_argument():
    comment = (ROOT / 'config' / 'fastdds_shm.xml').read_text().split('-->')[0]
    named = set(re.findall(r'(\w+):=', comment))
    assert named and named <= {a.name for a in launch_logic.ARGUMENTS}, named


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match='robot:=kuka'):
        launch_logic.launch_configurations_to_args({'robot': 'kuka'})
    with pytest.raises(FileNotFoundError, match='does not exist'):
        launch_logic.config_file('xarm6', '/nowhere.yaml')


class _Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


@pytest.fixture
def fake_launch(monkeypatch):
    """Stand-ins for launch / launch_ros: just enough to run generate_launch_description."""
    mods = {}
    for name in ('launch', 'launch.actions', 'launch.substitutions',
                 'launch.launch_description_sources', 'launch_ros', 'launch_ros.actions',
                 'launch_ros.substitutions'):
        mods[name] = types.ModuleType(name)
        monkeypatch.setitem(sys.modules, name, mods[name])
    for mod, names in {
        'launch': ['LaunchDescription'],
        'launch.actions': ['DeclareLaunchArgument', 'OpaqueFunction', 'SetEnvironmentVariable',
                           'IncludeLaunchDescription', 'LogInfo'],
        'launch.substitutions': ['LaunchConfiguration', 'PathJoinSubstitution'],
        'launch.launch_description_sources': ['PythonLaunchDescriptionSource'],
        'launch_ros.actions': ['Node'],
        'launch_ros.substitutions': ['FindPackageShare'],
    }.items():
        for n in names:
            setattr(mods[mod], n, type(n, (_Recorder,), {}))
    return mods


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem.replace('.', '_'), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generic_launch_declares_described_arguments_and_starts_the_nodes(fake_launch,
                                                                          monkeypatch):
    monkeypatch.setattr(launch_logic, 'share_dir', lambda: ROOT)
    ld = _load(ROOT / 'launch' / 'vla.launch.py').generate_launch_description()
    actions = ld.args[0]
    declared = {a.args[0]: a.kwargs for a in actions if type(a).__name__ ==
                'DeclareLaunchArgument'}
    assert set(declared) == {a.name for a in launch_logic.ARGUMENTS}
    assert all(kw['description'] for kw in declared.values())
    assert declared['robot']['choices'] == list(launch_logic.CONFIGS)
    setup = next(a for a in actions if type(a).__name__ == 'OpaqueFunction').kwargs['function']
    context = types.SimpleNamespace(launch_configurations={'robot': 'ur5', 'use_sim': 'true',
                                                           'model': '/m/pkg'},
                                    environment={})
    started = setup(context)
    nodes = [a.kwargs for a in started if type(a).__name__ == 'Node']
    assert [n['executable'] for n in nodes] == ['vla_policy', 'sim_robot', 'sim_cameras']
    assert any(type(a).__name__ == 'SetEnvironmentVariable' for a in started)


def test_generic_launch_keeps_the_profile_of_its_environment_and_logs_it(fake_launch,
                                                                         monkeypatch):
    monkeypatch.setattr(launch_logic, 'share_dir', lambda: ROOT)
    actions = _load(ROOT / 'launch' / 'vla.launch.py').generate_launch_description().args[0]
    setup = next(a for a in actions if type(a).__name__ == 'OpaqueFunction').kwargs['function']
    for mode, sets in (('auto', False), ('true', True)):
        context = types.SimpleNamespace(
            launch_configurations={'fastdds_shm': mode},
            environment={PROFILE: '/home/me/my_profile.xml'})
        started = setup(context)
        assert any(type(a).__name__ == 'SetEnvironmentVariable' for a in started) == sets
        logged = [a.kwargs['msg'] for a in started if type(a).__name__ == 'LogInfo']
        assert len(logged) == 1 and '/home/me/my_profile.xml' in logged[0]


@pytest.mark.parametrize('name,robot_arg', [('xarm6', 'xarm6'), ('agibot_g1', 'agibot_g1'),
                                            ('franka', 'arm_id'), ('ur5', 'ur_type')])
def test_robot_wrappers_include_the_generic_launch(fake_launch, name, robot_arg):
    ld = _load(ROOT / 'launch' / f'{name}.launch.py').generate_launch_description()
    include = next(a for a in ld.args[0] if type(a).__name__ == 'IncludeLaunchDescription')
    robot = dict(include.kwargs['launch_arguments'])['robot']
    assert robot == robot_arg or robot.args[0] == robot_arg


def test_launch_files_hold_no_logic_beyond_wiring():
    for path in (ROOT / 'launch').glob('*.launch.py'):
        tree = ast.parse(path.read_text())
        funcs = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert 'generate_launch_description' in funcs and len(funcs) <= 2, (path, funcs)
