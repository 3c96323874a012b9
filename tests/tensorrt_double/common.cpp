#include "common.h"

#include <cstdio>
#include <cstdlib>

namespace trt_double {

void unimplemented(const char* method) {
  std::fprintf(stderr,
               "TensorRT test double: %s is not implemented (MLMark's backend was not expected to call it); "
               "stopping\n",
               method);
  std::fflush(stderr);
  std::abort();
}

void log(nvinfer1::ILogger* logger, Severity severity, const std::string& message) {
  const std::string line = "TensorRT test double (not TensorRT): " + message;
  if (logger) {
    logger->log(severity, line.c_str());
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

Counters& counters() {
  static Counters instance;
  return instance;
}

std::string env(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value && *value ? std::string(value) : fallback;
}

int32_t release_number() { return NV_TENSORRT_VERSION; }

std::vector<int64_t> to_vector(const nvinfer1::Dims& dims) {
  std::vector<int64_t> out;
  for (int32_t i = 0; i < dims.nbDims && i < nvinfer1::Dims::MAX_DIMS; ++i) out.push_back(static_cast<int64_t>(dims.d[i]));
  return out;
}

nvinfer1::Dims to_dims(const std::vector<int64_t>& shape) {
  nvinfer1::Dims dims;
  dims.nbDims = static_cast<int32_t>(shape.size() < static_cast<std::size_t>(nvinfer1::Dims::MAX_DIMS)
                                         ? shape.size()
                                         : static_cast<std::size_t>(nvinfer1::Dims::MAX_DIMS));
  for (int32_t i = 0; i < nvinfer1::Dims::MAX_DIMS; ++i) {
    dims.d[i] = i < dims.nbDims ? static_cast<decltype(dims.d[0] + 0)>(shape[static_cast<std::size_t>(i)]) : 0;
  }
  return dims;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

int element_bytes(int dtype) {
  switch (dtype) {
    case 0:  // kFLOAT
    case 3:  // kINT32
      return 4;
    case 1:  // kHALF
    case 7:  // kBF16
      return 2;
    case 2:  // kINT8
    case 4:  // kBOOL
    case 5:  // kUINT8
    case 6:  // kFP8
      return 1;
    case 8:  // kINT64
      return 8;
    default:
      return 0;
  }
}

}  // namespace trt_double
