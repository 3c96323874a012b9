// The TensorRT backend as the rest of the library sees it: no TensorRT header here, so the C ABI and the
// loop compile the same with and without TensorRT. A build with TensorRT links src/tensorrt/*.cpp; a
// build without links src/tensorrt_absent.cpp, whose functions refuse with MLMARK_ERR_UNSUPPORTED.
#ifndef MLMARK_TENSORRT_BACKEND_H
#define MLMARK_TENSORRT_BACKEND_H

#include <memory>
#include <string>

#include "mlmark/executor.h"
#include "mlmark/mlmark_c.h"

namespace mlmark {
namespace trt {

// Fills everything of info but struct_size; built_with_tensorrt = 0 (and nothing else) without TensorRT.
void get_info(int device, mlmark_trt_info* info);

// Parse an ONNX file, build an engine at a fixed batch and precision, write it to config.engine_path.
void build_engine(const mlmark_trt_build_config& config, mlmark_trt_build_result* result);

// IEngineInspector's JSON (LayerInformationFormat::kJSON) for all layers of an engine file.
std::string inspect_engine(int device, const std::string& engine_path);

// Execution contexts of one deserialized engine, on the current CUDA device.
std::unique_ptr<ExecutorFactory> make_engine_factory(const std::string& engine_path);

}  // namespace trt
}  // namespace mlmark

#endif  // MLMARK_TENSORRT_BACKEND_H
