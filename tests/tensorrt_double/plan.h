// The test double's serialized engine ("plan"): what a build recorded, which deserialization reads back.
//
// It holds the requested precision flags, the batch, each input's and output's name, type and shape (with
// the optimization profile where the batch is dynamic), each layer's precision as the inspector reports it,
// the kernel duration every inference takes, and padding that makes the file's size follow the weights'
// precision (an eighth of what TensorRT would store), so that the precision check's size rule sees what it
// would see on TensorRT. The first line says what the file is, for anyone who opens it.
#ifndef TRT_DOUBLE_PLAN_H
#define TRT_DOUBLE_PLAN_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace trt_double {

extern const char kPlanMagic[];  // "MLMark TensorRT test double engine (not TensorRT)\n"

enum PlanFlags : uint32_t {
  kPlanFp16 = 1u << 0,            // kFP16 was set
  kPlanInt8 = 1u << 1,            // kINT8 was set
  kPlanProfile = 1u << 2,         // inputs with a dynamic batch, served by optimization profile 0
  kPlanCalibrationTable = 1u << 3,  // INT8 scales from a calibrator's cache (implicit quantization)
  kPlanQdq = 1u << 4,             // INT8 from the network's Q/DQ layers (explicit quantization)
  kPlanFallback = 1u << 5,        // built as an fp32 engine although fp16/int8 was allowed (MLMARK_TRT_DOUBLE_FALLBACKS)
  kPlanMyelin = 1u << 6,          // one fused layer, as TensorRT's Myelin shows it (MLMARK_TRT_DOUBLE_MYELIN)
};

struct PlanTensor {
  std::string name;
  std::vector<int64_t> dims;
  std::string precision;  // "fp32", "fp16", "int8"
};

struct PlanLayer {
  std::string name;
  std::string layer_type;      // as the inspector names it: "CaskConvolution", "Reformat", "Myelin", ...
  std::string parameter_type;  // "Convolution", "MatrixMultiply", ... ("" where TensorRT gives none)
  std::string precision;
  std::vector<PlanTensor> inputs;
  std::vector<PlanTensor> outputs;
};

struct PlanIO {
  std::string name;
  bool is_input = false;
  int32_t dtype = 0;           // nvinfer1::DataType as a number
  std::vector<int64_t> dims;   // -1 where the optimization profile decides
  std::vector<int64_t> min, opt, max;  // the profile's shapes (inputs with a dynamic dimension only)
};

struct Plan {
  int32_t release = 0;  // NV_TENSORRT_VERSION of the headers the double was built with
  uint32_t flags = 0;
  int32_t verbosity = 0;  // nvinfer1::ProfilingVerbosity as a number
  int32_t batch = 0;
  int64_t kernel_ns = 0;
  int64_t device_memory = 0;
  std::vector<PlanIO> io;
  std::vector<PlanLayer> layers;
  uint64_t weight_bytes = 0;
};

std::string serialize(const Plan& plan);
// False with *error when data is not a plan, is truncated, or was written by another release of the double.
bool deserialize(const void* data, std::size_t size, Plan* plan, std::string* error);

}  // namespace trt_double

#endif  // TRT_DOUBLE_PLAN_H
