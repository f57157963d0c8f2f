"""Helpers shared by the tests: checkpoints, W&B run files, reference implementations."""
