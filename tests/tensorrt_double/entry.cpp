// The C entry points an application links from libnvinfer and libnvonnxparser (the headers' inline
// createInferBuilder(), createInferRuntime() and createParser() call them), and the double's own: the marker
// MLMark's backend looks for to know it runs on the double, and counters the tests read.
#include "double.h"

namespace {

bool version_matches(nvinfer1::ILogger* logger, int32_t version, int32_t expected, const char* what) {
  if (version == expected) return true;
  trt_double::log(logger, trt_double::Severity::kERROR,
                  std::string(what) + ": the application was compiled against version " + std::to_string(version) +
                      " of the headers, the double against " + std::to_string(expected));
  return false;
}

}  // namespace

extern "C" {

TENSORRTAPI void* createInferBuilder_INTERNAL(void* logger, int32_t version) noexcept {
  nvinfer1::ILogger* l = static_cast<nvinfer1::ILogger*>(logger);
  if (!version_matches(l, version, NV_TENSORRT_VERSION, "createInferBuilder")) return nullptr;
  return static_cast<nvinfer1::IBuilder*>(new trt_double::BuilderDouble(l));
}

TENSORRTAPI void* createInferRuntime_INTERNAL(void* logger, int32_t version) noexcept {
  nvinfer1::ILogger* l = static_cast<nvinfer1::ILogger*>(logger);
  if (!version_matches(l, version, NV_TENSORRT_VERSION, "createInferRuntime")) return nullptr;
  return static_cast<nvinfer1::IRuntime*>(new trt_double::RuntimeDouble(l));
}

TENSORRTAPI void* createNvOnnxParser_INTERNAL(void* network, void* logger, int version) TRT_DOUBLE_PARSER_NOEXCEPT {
  nvinfer1::ILogger* l = static_cast<nvinfer1::ILogger*>(logger);
  if (!version_matches(l, version, NV_ONNX_PARSER_VERSION, "createNvOnnxParser")) return nullptr;
  trt_double::NetworkDouble* net =
      dynamic_cast<trt_double::NetworkDouble*>(static_cast<nvinfer1::INetworkDefinition*>(network));
  if (!net) {
    trt_double::log(l, trt_double::Severity::kERROR, "createNvOnnxParser: the network was not made by the double");
    return nullptr;
  }
  return static_cast<nvonnxparser::IParser*>(new trt_double::ParserDouble(net, l));
}

TENSORRTAPI int getNvOnnxParserVersion() TRT_DOUBLE_PARSER_NOEXCEPT { return NV_ONNX_PARSER_VERSION; }

TENSORRTAPI int32_t getInferLibVersion() noexcept { return NV_TENSORRT_VERSION; }

#if TRT_DOUBLE_VERSION_PARTS
TENSORRTAPI int32_t getInferLibMajorVersion() noexcept { return NV_TENSORRT_MAJOR; }
TENSORRTAPI int32_t getInferLibMinorVersion() noexcept { return NV_TENSORRT_MINOR; }
TENSORRTAPI int32_t getInferLibPatchVersion() noexcept { return NV_TENSORRT_PATCH; }
TENSORRTAPI int32_t getInferLibBuildVersion() noexcept { return NV_TENSORRT_BUILD; }
#endif

// The marker: present in this library only, never in TensorRT's. MLMark's backend finds it with dlsym and
// reports mlmark_trt_info.test_double, so that nothing measured on the double passes for a TensorRT result.
__attribute__((visibility("default"))) int mlmark_tensorrt_test_double(void) { return 1; }

// How many builders, builds, runtimes, engines, contexts (made, and alive now) and enqueues this process has
// seen; -1 for an unknown name.
__attribute__((visibility("default"))) int mlmark_tensorrt_test_double_count(const char* what) {
  const std::string w = what ? what : "";
  trt_double::Counters& c = trt_double::counters();
  if (w == "builders") return c.builders.load();
  if (w == "builds") return c.builds.load();
  if (w == "runtimes") return c.runtimes.load();
  if (w == "engines") return c.engines.load();
  if (w == "contexts") return c.contexts.load();
  if (w == "contexts_alive") return c.contexts_alive.load();
  if (w == "enqueues") return c.enqueues.load();
  return -1;
}

}  // extern "C"
