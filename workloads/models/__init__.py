"""Synthetic-weight ONNX generators (mobilenet_v1, resnet50, ssd_mobilenet_v1), a graph builder and counters.

Each generator module has `build(seed) -> onnx.ModelProto` and a `GENERATOR_VERSION`; nothing is imported here
so that importing the package stays cheap.
"""
