"""Checkpoint-conversion tests: a package, so their basenames may repeat those of tests/models."""
