"""The model files a precision needs: TensorRT calibration tables, the Q/DQ models made from them, and
float16 conversions.

- `table`: TensorRT's text calibration cache (read, write, check against a model) and its record;
- `qdq`: the Q/DQ ONNX model with the table's scales, and finding it for an int8 task;
- `fp16`: the float16 conversion strongly typed TensorRT builders parse for fp16.

Targets use these to prepare a model, and workloads/calibrate.py writes the tables from a workload's
images; this package knows neither. Heavy modules (numpy, onnx, onnxruntime) are imported where
they are used, so that reading a table costs nothing.
"""
