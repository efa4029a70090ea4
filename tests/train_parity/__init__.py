"""Training-parity tests: cpjax's train steps against the reference trainers rebuilt in PyTorch."""
