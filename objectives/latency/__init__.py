"""Latency backends behind one protocol. Imports stay lazy (a board has no torch)."""
