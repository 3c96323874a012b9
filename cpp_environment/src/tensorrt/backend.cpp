// The backend's entry points that are neither the builder nor the executor: what this build offers, and
// the engine inspector.
#include "tensorrt/backend.h"

#include <cstring>

#include "cuda_util.h"
#include "tensorrt/trt_common.h"
#include "tensorrt/trt_compat.h"

namespace mlmark {
namespace trt {
namespace {

void copy_string(char* dst, std::size_t size, const std::string& src) {
  std::strncpy(dst, src.c_str(), size - 1);
  dst[size - 1] = '\0';
}

}  // namespace

void get_info(int device, mlmark_trt_info* info) {
  info->built_with_tensorrt = 1;
  const compat::Features f = compat::features();
  info->implicit_int8 = f.implicit_int8 ? 1 : 0;
  info->inspector = f.inspector ? 1 : 0;
  info->progress_monitor = f.progress_monitor ? 1 : 0;
  info->weak_typing = f.weak_typing ? 1 : 0;
  copy_string(info->header_version, sizeof(info->header_version), compat::header_version());
  copy_string(info->runtime_version, sizeof(info->runtime_version), compat::runtime_version());
  info->test_double = linked_against_test_double() ? 1 : 0;
  // Neither a context nor a builder: the caller may be about to start a build child (see mlmark_c.h).
  const DeviceProps props = device_props(device);
  bool fp16 = false, int8 = false, from_builder = false;
  compat::fast_precisions(props.cc_major, props.cc_minor, false, &fp16, &int8, &from_builder);
  info->fast_fp16 = fp16 ? 1 : 0;
  info->fast_int8 = int8 ? 1 : 0;
  info->fast_from_builder = from_builder ? 1 : 0;
}

std::string inspect_engine(int device, const std::string& engine_path) {
  use_device(device);
  std::shared_ptr<Engine> engine = load_engine(engine_path);
  ErrorCapture errors;
  // Without an execution context the inspector names formats briefly ("Half", "Int8", "Float"); with one
  // it spells them out, and on some GPUs it then fails. The brief form says the precision, which is all
  // that is needed here.
  Ptr<nvinfer1::IEngineInspector> inspector(engine->engine->createEngineInspector());
  if (!inspector) throw Error(MLMARK_ERR_TENSORRT, "creating the engine inspector failed: " + errors.summary("no detail"));
  const char* json = inspector->getEngineInformation(nvinfer1::LayerInformationFormat::kJSON);
  if (!json) {
    throw Error(MLMARK_ERR_TENSORRT, "the engine inspector gave no information for " + engine_path + ": " +
                                         errors.summary("no detail"));
  }
  return std::string(json);
}

}  // namespace trt
}  // namespace mlmark
