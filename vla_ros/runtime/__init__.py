"""Robot side, no torch: everything needed to serve a model package, and nothing else.

  package/   the model-package format: manifest schema, parsing, consistency, files, loader
  backends/  ONNX Runtime and TensorRT behind one `run(graph, feeds)` interface
  policy/    observation -> ActionChunk: preprocessing, the exit pipeline, early exit, flow
             sampling, calibration of thresholds, observation-set files
  chunking/  chunk execution: the action queue, merges, trajectories, when to infer
  serving/   the policy in its own process, and the inference worker thread
  bench/     `vla-ros bench PKG` and `vla-ros bench queue`
Imports neither torch, transformers, onnx nor rclpy, and nothing from vla_ros.export,
vla_ros.model, vla_ros.sim or vla_ros.ros (test/test_layering.py enforces it).
"""
