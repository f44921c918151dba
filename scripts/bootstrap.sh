#!/usr/bin/env bash
# Create or reuse the project's virtual environment and install the pinned dependencies.
# Idempotent: a stamp keyed on the requirement files, setup.py and the ROS mode makes a
# second run with everything installed return in well under a second.
#
#   VLA_ROS_VENV   where the environment lives (default: .venv in the repository)
#   PYTHON         interpreter used to create it (default: python3; 3.10 or newer)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VLA_ROS_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "bootstrap: $python is missing or older than 3.10; set PYTHON=/path/to/python3.10+" >&2
  exit 1
fi

# A sourced ROS 2 install brings its own rclpy (built for its Python); use it rather than
# the PyPI wheels, which would shadow it with a second copy of the ROS libraries.
ros_mode=wheels
if [ -n "${ROS_DISTRO:-}" ] && "$python" -c 'import rclpy' 2>/dev/null; then
  ros_mode="system-$ROS_DISTRO"
fi

reqs=("$root/requirements/dev.txt")
[ "$ros_mode" = wheels ] && reqs+=("$root/requirements/ros-jazzy.txt")

# The real ROS 2 launch and CLI tools and control_msgs are not on PyPI; where they sit beside
# the repository (../shared/ros-tools) they are installed too, so tests can drive the package
# with `colcon build`, `ros2 launch`, `ros2 param` ... (those tests skip without them).
ros_tools="$root/../shared/ros-tools"
with_tools=no
[ "$ros_mode" = wheels ] && [ -x "$ros_tools/install.sh" ] && with_tools=yes

stamp_key="$( (cat "$root"/requirements/*.txt "$root/setup.py" "$root/setup.cfg"; echo "$ros_mode $with_tools") \
  | sha256sum | cut -d' ' -f1)"
stamp="$venv/.vla_ros-installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_key" ] && [ -x "$venv/bin/python" ]; then
  exit 0
fi

start=$(date +%s)
if [ ! -x "$venv/bin/python" ]; then
  echo "bootstrap: creating $venv ($ros_mode ROS)"
  if [ "$ros_mode" = wheels ]; then
    "$python" -m venv "$venv"
  else
    "$python" -m venv --system-site-packages "$venv"
  fi
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
echo "bootstrap: installing pinned dependencies (first run takes a few minutes)"
"${pip[@]}" install -qq --upgrade pip >/dev/null
req_args=()
for r in "${reqs[@]}"; do req_args+=(-r "$r"); done
"${pip[@]}" install -qq "${req_args[@]}"
"${pip[@]}" install -qq --no-deps --no-build-isolation --use-pep517 -e "$root"
if [ "$with_tools" = yes ]; then
  "$ros_tools/install.sh" "$venv" >/dev/null
  for whl in "$ros_tools"/msgs/*.whl; do
    [ -f "$whl" ] && "${pip[@]}" install -qq --no-deps "$whl"
  done
  echo "bootstrap: ROS 2 launch/CLI tools and control_msgs from $ros_tools"
fi
echo "$stamp_key" >"$stamp"
echo "bootstrap: environment ready in $(( $(date +%s) - start )) s"
