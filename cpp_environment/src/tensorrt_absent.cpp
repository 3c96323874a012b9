// The TensorRT backend of a build without TensorRT (CMake found none, or MLMARK_WITH_TENSORRT=OFF): it
// says so, and every TensorRT function refuses with MLMARK_ERR_UNSUPPORTED.
#include "tensorrt/backend.h"

namespace mlmark {
namespace trt {
namespace {

[[noreturn]] void refuse() {
  throw Error(MLMARK_ERR_UNSUPPORTED,
              "this native library was built without TensorRT (CMake did not find it); install TensorRT or point "
              "CMake at it with -DTensorRT_ROOT=<dir>, then rebuild");
}

}  // namespace

void get_info(int device, mlmark_trt_info* info) {
  (void)device;
  info->built_with_tensorrt = 0;
}

void build_engine(const mlmark_trt_build_config& config, mlmark_trt_build_result* result) {
  (void)config;
  (void)result;
  refuse();
}

std::string inspect_engine(int device, const std::string& engine_path) {
  (void)device;
  (void)engine_path;
  refuse();
}

std::unique_ptr<ExecutorFactory> make_engine_factory(const std::string& engine_path) {
  (void)engine_path;
  refuse();
}

}  // namespace trt
}  // namespace mlmark
