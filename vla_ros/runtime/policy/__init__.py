"""The policy: an observation in, an ActionChunk out.

Owns preprocessing (preprocess.py), running a package's graphs exit by exit (pipeline.py),
the early-exit metrics and threshold rule (early_exit.py), the flow integrator (flow.py), the
Policy with its modes and deadline (policy.py), the deadline's cost estimates (deadline.py),
threshold calibration (calibration.py) and observation-set files (observations.py). Imports
package/, backends/ and chunking.chunk; never serving/, bench/ or any ROS, torch or export
code.
"""
