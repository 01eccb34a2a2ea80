"""Gantry: the per-host agent and its container core."""

__version__ = "0.1.0"
