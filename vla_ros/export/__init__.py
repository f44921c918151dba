"""Offline: torch model -> ONNX segments -> model package.

Owns the checkpoint layout (checkpoint.py), graph boundaries (graphs.py), the exporter
(exporter.py), the word tokenizer for small models (tokenizer.py) and the torch reference
backend that runs the same graphs eagerly (torch_backend.py). Imports model/ and runtime/;
never ROS.
"""
