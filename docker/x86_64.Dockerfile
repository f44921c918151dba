# vla_ros on an x86_64 robot computer with an NVIDIA GPU (RTX 4090 class):
# Ubuntu 24.04, CUDA 13 + cuDNN 9, TensorRT 10, onnxruntime-gpu, ROS 2 Jazzy.
# Build from the repository root:  docker build -f docker/x86_64.Dockerfile -t vla_ros:jazzy .
ARG BASE_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
FROM ${BASE_IMAGE}

ARG ONNXRUNTIME_GPU_VERSION=1.32.0
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    ROS_DISTRO=jazzy \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_NO_CACHE_DIR=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# ROS 2 Jazzy from packages.ros.org; TensorRT from the CUDA repository the base image has.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
 && curl -fsSL https://raw.githubusercontent.com/ros/rosdistro/master/ros.key \
      -o /usr/share/keyrings/ros-archive-keyring.gpg \
 && echo "deb [signed-by=/usr/share/keyrings/ros-archive-keyring.gpg]" \
      "http://packages.ros.org/ros2/ubuntu noble main" > /etc/apt/sources.list.d/ros2.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      ros-jazzy-ros-base ros-jazzy-rmw-fastrtps-cpp ros-jazzy-diagnostic-msgs \
      ros-jazzy-trajectory-msgs ros-jazzy-sensor-msgs ros-jazzy-std-srvs \
      python3-colcon-common-extensions python3-rosdep python3-pip \
      python3-numpy python3-opencv python3-yaml \
      libnvinfer10 libnvinfer-plugin10 libnvonnxparsers10 python3-libnvinfer \
 && rm -rf /var/lib/apt/lists/*

# The GPU build of ONNX Runtime replaces the CPU one that rosdep would install.
RUN python3 -m pip install --no-cache-dir \
      "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}" "tokenizers==0.23.3"

WORKDIR /ws
COPY . /ws/src/vla_ros
# onnxruntime and tokenizers are installed above; pybullet only serves use_sim:=true,
# which a robot image does not run.
RUN rosdep init \
 && rosdep update --rosdistro jazzy \
 && rosdep install --from-paths src --ignore-src -y --rosdistro jazzy \
      --skip-keys "python3-onnxruntime-pip python3-tokenizers-pip python3-pybullet-pip" \
 && rm -rf /var/lib/apt/lists/* \
 && source /opt/ros/jazzy/setup.bash \
 && colcon build --packages-select vla_ros

COPY docker/entrypoint.sh /entrypoint.sh
# TensorRT engines are cached here; mount a volume so they survive container restarts.
ENV VLA_ROS_CACHE=/cache
VOLUME ["/cache"]
ENTRYPOINT ["/entrypoint.sh"]
CMD ["ros2", "launch", "vla_ros", "vla.launch.py"]
