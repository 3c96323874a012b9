// MLMark's TensorRT test double: a stand-in for libnvinfer and libnvonnxparser that the test suite builds
// against the real headers of one TensorRT release, so that every line of the tensorrt target runs on a GPU
// without TensorRT. It is not TensorRT and computes nothing a model computes: see README.md.
//
// What the double's files share: the logger, stopping on a call it does not implement, the knobs the tests
// turn (environment variables MLMARK_TRT_DOUBLE_*), counters the tests read, and release differences.
#ifndef TRT_DOUBLE_COMMON_H
#define TRT_DOUBLE_COMMON_H

#include <NvInfer.h>
#include <NvInferVersion.h>
#include <NvOnnxParser.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#define TRT_DOUBLE_AT_LEAST(major, minor) \
  (NV_TENSORRT_MAJOR > (major) || (NV_TENSORRT_MAJOR == (major) && NV_TENSORRT_MINOR >= (minor)))

// The releases the double is written for: 8.2 (bindings, enqueueV2, calibrators, setMaxWorkspaceSize), 8.6
// (named I/O tensors, calibrators, shared optimization profiles) and 10.3 (Q/DQ INT8, progress monitor).
#if !(NV_TENSORRT_MAJOR == 8 && (NV_TENSORRT_MINOR == 2 || NV_TENSORRT_MINOR == 6)) && \
    !(NV_TENSORRT_MAJOR == 10 && NV_TENSORRT_MINOR == 3)
#error "the TensorRT test double is written for the headers of TensorRT 8.2, 8.6 and 10.3"
#endif

#define TRT_DOUBLE_IO_TENSORS TRT_DOUBLE_AT_LEAST(8, 5)       // named I/O tensors and enqueueV3
#define TRT_DOUBLE_CALIBRATORS (!TRT_DOUBLE_AT_LEAST(10, 1))  // implicit INT8 as MLMark uses it
#define TRT_DOUBLE_PROGRESS TRT_DOUBLE_AT_LEAST(10, 0)        // IProgressMonitor
#define TRT_DOUBLE_DIMS64 TRT_DOUBLE_AT_LEAST(10, 0)          // Dims holds int64_t
#define TRT_DOUBLE_VERSION_PARTS TRT_DOUBLE_AT_LEAST(10, 0)   // getInferLibMajorVersion() and friends

// The ONNX parser's C entry points and methods are noexcept from 10.0 on.
#if TRT_DOUBLE_AT_LEAST(10, 0)
#define TRT_DOUBLE_PARSER_NOEXCEPT noexcept
#else
#define TRT_DOUBLE_PARSER_NOEXCEPT
#endif

namespace trt_double {

using Severity = nvinfer1::ILogger::Severity;

// Stops the process naming the TensorRT method the double does not implement: a call MLMark's backend was
// not expected to make must be found, not answered with something invented.
[[noreturn]] void unimplemented(const char* method);

// Logs through the ILogger TensorRT was given, every line marked as the test double's.
void log(nvinfer1::ILogger* logger, Severity severity, const std::string& message);

// Counters the tests read (mlmark_tensorrt_test_double_count): what was created, in which process.
struct Counters {
  std::atomic<int> builders{0};
  std::atomic<int> builds{0};
  std::atomic<int> runtimes{0};
  std::atomic<int> engines{0};
  std::atomic<int> contexts{0};
  std::atomic<int> contexts_alive{0};
  std::atomic<int> enqueues{0};
};
Counters& counters();

// An environment variable, or fallback when unset or empty.
std::string env(const char* name, const std::string& fallback = "");

// The number this release writes into calibration table headers and plan files (NV_TENSORRT_VERSION).
int32_t release_number();

// Shapes as int64_t whichever width Dims has in this release.
std::vector<int64_t> to_vector(const nvinfer1::Dims& dims);
nvinfer1::Dims to_dims(const std::vector<int64_t>& shape);
std::string shape_string(const std::vector<int64_t>& shape);

// Bytes of one element of a DataType (by its number); 0 when unknown.
int element_bytes(int dtype);

}  // namespace trt_double

#endif  // TRT_DOUBLE_COMMON_H
