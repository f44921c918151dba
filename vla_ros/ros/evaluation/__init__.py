"""Running the node as a user does and measuring it: closed-loop episodes on the sim
robot (episodes.py), `vla-ros eval` (evaluate.py), `vla-ros demo` (demo.py) and
`vla-ros bench node` (node_bench.py). May import every layer; nothing imports it but cli.py.
"""
