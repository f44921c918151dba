"""Chunk execution: from ActionChunks to a target at any time.

Owns the ActionChunk (chunk.py), interpolated trajectories (trajectory.py), merge strategies
(merge.py), the time-indexed action queue (action_queue.py) and when to infer next
(scheduling.py). Pure numpy; imports nothing from the project outside chunking/.
"""
