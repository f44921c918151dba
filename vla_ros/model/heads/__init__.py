"""Action heads of the four families (flow DiT, flow expert, bridge, token heads).
"""
