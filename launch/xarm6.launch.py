"""vla_policy on a UFactory xArm6 (xarm6_traj_controller). Other arguments: see vla.launch.py."""

from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    generic = PathJoinSubstitution([FindPackageShare('vla_ros'), 'launch', 'vla.launch.py'])
    return LaunchDescription([IncludeLaunchDescription(
        PythonLaunchDescriptionSource(generic), launch_arguments={'robot': 'xarm6'}.items())])
