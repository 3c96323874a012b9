// Every difference between the TensorRT releases MLMark supports (8.2 on JetPack 4.6 up to 11.x) lives in
// this header and trt_compat.cpp, and nowhere else: the builder, the executor and the inspector call these
// functions and never test NV_TENSORRT_MAJOR themselves. Each release compiles only its own path, so
// each one builds without a deprecation warning.
//
// NvInferVersion.h of 11.x defines NV_TENSORRT_MAJOR/MINOR through TRT_MAJOR_ENTERPRISE/..., which are
// plain numbers, so the same #if tests work from 8.2 to 11.x.
#ifndef MLMARK_TRT_COMPAT_H
#define MLMARK_TRT_COMPAT_H

#include <NvInfer.h>
#include <NvInferVersion.h>
#include <NvOnnxParser.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#define MLMARK_TRT_AT_LEAST(major, minor) \
  (NV_TENSORRT_MAJOR > (major) || (NV_TENSORRT_MAJOR == (major) && NV_TENSORRT_MINOR >= (minor)))

#if !MLMARK_TRT_AT_LEAST(8, 2)
#error "MLMark's TensorRT backend needs TensorRT 8.2 or newer (JetPack 4.6)"
#endif

namespace mlmark {
namespace trt {
namespace compat {

// What the release compiled against offers.
struct Features {
  bool implicit_int8;     // INT8 from a calibration table: calibrators exist and are not deprecated (< 10.1)
  bool weak_typing;       // the builder takes kFP16 / kINT8 flags (< 10.12; 11 has strong typing only)
  bool progress_monitor;  // IProgressMonitor (>= 10.0)
  bool inspector;         // IEngineInspector (>= 8.2, so always here)
  bool io_tensor_api;     // named I/O tensors and enqueueV3 (>= 8.5), else bindings and enqueueV2
  bool builder_fast_queries;  // IBuilder::platformHasFastFp16/Int8 usable (< 10.5)
};
Features features();

// "8.5.2": the headers compiled against; the libnvinfer loaded now.
std::string header_version();
std::string runtime_version();

// Whether the device runs FP16 / INT8 fast: from the compute capability (FP16 on 5.3 (Nano), 6.0, 6.2 (TX2)
// and 7.0 and newer; INT8 (DP4A or tensor cores) on 6.1 and 7.0 and newer, as the TensorRT support matrix
// lists them), or, with ask_builder, from IBuilder where the release still answers (*from_builder = true).
// Asking the builder creates a CUDA context, so only a build (in its own process) does.
void fast_precisions(int cc_major, int cc_minor, bool ask_builder, bool* fp16, bool* int8, bool* from_builder);

// --- building ---------------------------------------------------------------------------------------

// An explicit-batch network: the creation flag before 10.0, the default since.
nvinfer1::INetworkDefinition* create_network(nvinfer1::IBuilder& builder);
void set_workspace(nvinfer1::IBuilderConfig& config, std::size_t bytes);
// FP16 / INT8 builder flags where the release is weakly typed (INT8 also allows FP16 for the layers that
// stay in floating point, when the device has fast FP16). Returns false where precision comes only from the
// network's own types (strongly typed releases), so the caller checks the model instead.
bool set_precision_flags(nvinfer1::IBuilderConfig& config, bool fp16, bool int8, bool fast_fp16);

// Something the builder config points at, which must live until the build ends.
class Attachment {
 public:
  virtual ~Attachment() {}
};
// Inputs whose batch dimension is dynamic, each with its shape at the task's batch. From 8.6 they get one
// optimization profile with min = opt = max = that shape, which every execution context shares (returned,
// owned by the builder); before 8.6 a profile serves one execution context at a time and the loop runs one
// context per stream, so there the network's inputs are fixed with setDimensions instead (returns null).
struct DynamicInput {
  nvinfer1::ITensor* tensor;
  std::vector<int64_t> shape;
};
const nvinfer1::IOptimizationProfile* fix_dynamic_inputs(nvinfer1::IBuilder& builder, nvinfer1::IBuilderConfig& config,
                                                         const std::vector<DynamicInput>& inputs);

// Implicit INT8 from a calibration table: a calibrator whose cache is the table and which has no batches,
// so TensorRT takes every scale from the table; profile (from fix_dynamic_inputs, may be null) becomes the
// calibration profile, which a network with runtime dimensions must have. Error(UNSUPPORTED) where
// calibrators are gone or deprecated.
std::unique_ptr<Attachment> attach_calibration_table(nvinfer1::IBuilderConfig& config, const std::string& table,
                                                     int batch, const nvinfer1::IOptimizationProfile* profile);
// Build progress in the log: IProgressMonitor phases and steps from 10.0 on, a heartbeat line before.
std::unique_ptr<Attachment> attach_progress(nvinfer1::IBuilderConfig& config);

// One parser error as a line: the ONNX node (index, and from 10 its name and operator) and the message.
std::string parser_error(const nvonnxparser::IParserError& error);

// --- running ----------------------------------------------------------------------------------------

// One input or output tensor of an engine, in the order enqueue() takes buffers.
struct IOTensor {
  std::string name;
  bool is_input;
  int dtype;                   // nvinfer1::DataType as a number (= MLMARK_DTYPE_*)
  std::vector<int64_t> shape;  // as the engine declares it: -1 where the profile decides
  int32_t index;               // binding index (before 8.5) or I/O tensor index
};
std::vector<IOTensor> io_tensors(const nvinfer1::ICudaEngine& engine);
// Device memory one execution context needs for activations.
int64_t context_memory_bytes(const nvinfer1::ICudaEngine& engine);
// Make a new context ready to enqueue: optimization profile 0 (which releases before 9 assign only to the
// first context), every dynamic input at the profile's shape (min = opt = max here), runtime NVTX
// annotations at layer names only (a kDETAILED build would otherwise annotate every layer in full while
// timed; from 8.6). Returns the context's shapes of all tensors, in io_tensors order.
std::vector<std::vector<int64_t>> prepare_context(nvinfer1::IExecutionContext& context,
                                                  const nvinfer1::ICudaEngine& engine,
                                                  const std::vector<IOTensor>& tensors);
// Enqueue one inference: setTensorAddress (for addresses that changed, remembered in bound) and enqueueV3
// from 8.5, enqueueV2 with the binding array before.
bool enqueue(nvinfer1::IExecutionContext& context, const std::vector<IOTensor>& tensors, void* const* buffers,
             std::vector<void*>* bound, cudaStream_t stream);

}  // namespace compat
}  // namespace trt
}  // namespace mlmark

#endif  // MLMARK_TRT_COMPAT_H
