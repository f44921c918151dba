"""vla_policy on a Franka arm: arm_id:=fr3 (default), panda or fer. Other arguments: see
vla.launch.py."""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    generic = PathJoinSubstitution([FindPackageShare('vla_ros'), 'launch', 'vla.launch.py'])
    return LaunchDescription([
        DeclareLaunchArgument('arm_id', default_value='fr3', choices=['fr3', 'panda', 'fer'],
                              description='Franka arm: fr3, or the Panda as panda or fer '
                                          '(its current name; fer_jointN joints).'),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(generic),
                                 launch_arguments={'robot': LaunchConfiguration('arm_id')}
                                 .items())])
