"""INT8: TensorRT calibration tables, the Q/DQ models made from them, and the calibration that makes both.

- `table`: TensorRT's text calibration cache (read, write, check against a model) and its record;
- `calibrate`: the images, ONNX Runtime's calibrators, and the run behind `utility/calibrate.py`;
- `qdq`: the Q/DQ ONNX model with the table's scales, and finding it for an int8 task.

Heavy modules (numpy, onnx, onnxruntime) are imported where they are used, so that reading a
table costs nothing.
"""
