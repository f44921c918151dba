"""The `vla_policy` lifecycle node: policy_node.py (lifecycle, entities, services) with its
parts beside it: inputs, control, swap, reconfigure, status, guard; params.py declares every
parameter; slots.py holds the latest-only input slots.
"""
