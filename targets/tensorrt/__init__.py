"""The tensorrt target: engines built and cached in engines/, run by the native library's loop."""
