"""ONNX Runtime target: the runnable default on any machine and the baseline for speed-ups."""
