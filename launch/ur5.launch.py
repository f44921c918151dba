"""vla_policy on a Universal Robots arm: ur_type:=ur5e (default) or ur5. Other arguments:
see vla.launch.py."""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    generic = PathJoinSubstitution([FindPackageShare('vla_ros'), 'launch', 'vla.launch.py'])
    return LaunchDescription([
        DeclareLaunchArgument('ur_type', default_value='ur5e', choices=['ur5e', 'ur5'],
                              description='UR model (controller rates differ: 500 / 125 Hz).'),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(generic),
                                 launch_arguments={'robot': LaunchConfiguration('ur_type')}
                                 .items())])
