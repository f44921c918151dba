"""Per robot: joint names and limits (robots.py), state assembly and commands (adapter.py),
the safety filter (safety.py). Numpy only; imports nothing from the project outside adapters/.
"""
