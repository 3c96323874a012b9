"""PyTorch target: the workload's ONNX file as a torch module, eager, as CUDA graphs or torch.compile'd."""
