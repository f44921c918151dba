# vla_ros on a Jetson Orin: JetPack 6 (L4T r36, Ubuntu 22.04, CUDA 12.6, TensorRT 10.3),
# ROS 2 Humble, onnxruntime-gpu built for JetPack 6.
# Build on the Jetson (or with an arm64 builder) from the repository root:
#   docker build -f docker/jetson.Dockerfile -t vla_ros:humble-jp6 .
ARG BASE_IMAGE=nvcr.io/nvidia/l4t-jetpack:r36.4.0
FROM ${BASE_IMAGE}

# Jetson AI Lab hosts onnxruntime-gpu wheels for JetPack 6 / CUDA 12.6 (PyPI has none for aarch64).
ARG ORT_INDEX=https://pypi.jetson-ai-lab.io/jp6/cu126
# Pick a version the index lists for your JetPack (pip index versions onnxruntime-gpu --index-url ...).
ARG ONNXRUNTIME_GPU_VERSION=1.23.0
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    ROS_DISTRO=humble \
    PIP_NO_CACHE_DIR=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# TensorRT and its Python bindings (python3-libnvinfer) come with the JetPack base image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
 && curl -fsSL https://raw.githubusercontent.com/ros/rosdistro/master/ros.key \
      -o /usr/share/keyrings/ros-archive-keyring.gpg \
 && echo "deb [signed-by=/usr/share/keyrings/ros-archive-keyring.gpg]" \
      "http://packages.ros.org/ros2/ubuntu jammy main" > /etc/apt/sources.list.d/ros2.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      ros-humble-ros-base ros-humble-rmw-fastrtps-cpp ros-humble-diagnostic-msgs \
      ros-humble-trajectory-msgs ros-humble-sensor-msgs ros-humble-std-srvs \
      python3-colcon-common-extensions python3-rosdep python3-pip \
      python3-numpy python3-opencv python3-yaml \
 && rm -rf /var/lib/apt/lists/*

RUN python3 -m pip install --no-cache-dir --extra-index-url "${ORT_INDEX}" \
      "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}" "tokenizers==0.23.3"

WORKDIR /ws
COPY . /ws/src/vla_ros
# onnxruntime and tokenizers are installed above; pybullet only serves use_sim:=true,
# which a robot image does not run.
RUN rosdep init \
 && rosdep update --rosdistro humble \
 && rosdep install --from-paths src --ignore-src -y --rosdistro humble \
      --skip-keys "python3-onnxruntime-pip python3-tokenizers-pip python3-pybullet-pip" \
 && rm -rf /var/lib/apt/lists/* \
 && source /opt/ros/humble/setup.bash \
 && colcon build --packages-select vla_ros

COPY docker/entrypoint.sh /entrypoint.sh
ENV VLA_ROS_CACHE=/cache
VOLUME ["/cache"]
ENTRYPOINT ["/entrypoint.sh"]
CMD ["ros2", "launch", "vla_ros", "vla.launch.py"]
