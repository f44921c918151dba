"""vla_policy for any supported robot: `ros2 launch vla_ros vla.launch.py robot:=fr3 model:=PKG`.

The decisions live in vla_ros.ros.launch_logic (tested without the launch package); this file
only declares the arguments and turns the decided nodes into actions.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, SetEnvironmentVariable
from launch_ros.actions import Node

from vla_ros.ros import launch_logic


def _setup(context, *args, **kwargs):
    values = launch_logic.launch_configurations_to_args(dict(context.launch_configurations))
    # The launch's own environment: what the user exported, or an enclosing launch set.
    env = getattr(context, 'environment', None)
    actions = [LogInfo(msg=m) for m in launch_logic.environment_log(values, env=env)]
    actions += [SetEnvironmentVariable(k, v)
                for k, v in launch_logic.environment(values, env=env).items()]
    actions += [Node(**spec) for spec in launch_logic.nodes(values)]
    return actions


def generate_launch_description():
    declared = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description,
                                      **({'choices': list(a.choices)} if a.choices else {}))
                for a in launch_logic.ARGUMENTS]
    return LaunchDescription(declared + [OpaqueFunction(function=_setup)])
