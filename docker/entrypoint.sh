#!/usr/bin/env bash
# Sources ROS 2 and the vla_ros workspace, then runs the given command.
set -e
# shellcheck disable=SC1090
source "/opt/ros/${ROS_DISTRO}/setup.bash"
source /ws/install/setup.bash
exec "$@"
