"""Torch math on a loaded model and sample: no disk I/O, no printing."""
