"""ament_python build for vla_ros.

`colcon build` installs the launch, config and model files under share/vla_ros, where
`ros2 launch vla_ros ...` and `get_package_share_directory('vla_ros')` find them.
"""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'vla_ros'


def tree(src: str) -> list[tuple[str, list[str]]]:
    """data_files entries that mirror directory `src` under share/vla_ros/`src`."""
    entries = []
    for dirpath, _, filenames in os.walk(src):
        files = [os.path.join(dirpath, f) for f in sorted(filenames)]
        if files:
            entries.append((os.path.join('share', PACKAGE, dirpath), files))
    return entries


setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    # the tabletop's own arm descriptions (vla_ros/sim/descriptions.py)
    package_data={'vla_ros.sim': ['urdf/*.urdf']},
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.launch.py')),
        (f'share/{PACKAGE}/config', glob('config/*.yaml') + glob('config/*.xml')),
        *tree('models'),
    ],
    install_requires=['setuptools'],
    python_requires='>=3.10',
    zip_safe=False,
    maintainer='vla_ros maintainers',
    maintainer_email='maintainers@vla-ros.dev',
    description='Real-time serving of Vision-Language-Action policies on ROS 2.',
    license='Apache-2.0',
    extras_require={'test': ['pytest', 'hypothesis']},
    entry_points={
        'console_scripts': [
            'vla-ros = vla_ros.cli:main',
            'vla_policy = vla_ros.ros.node.policy_node:main',
            'sim_robot = vla_ros.ros.sim_nodes:main_robot',
            'sim_cameras = vla_ros.ros.sim_nodes:main_cameras',
        ],
    },
)
