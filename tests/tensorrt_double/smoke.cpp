// A check of the TensorRT test double without a GPU: parse an ONNX model, build an engine through TensorRT's
// public API (as MLMark's backend calls it), deserialize it, and print its tensors and the inspector's JSON.
// Building and deserializing need no GPU in the double (execution contexts and enqueue do), so the CPU-side
// tests run this (tests/test_tensorrt_double.py) to catch a broken double before the GPU tests do.
//
//   trt_double_smoke MODEL.onnx fp32|fp16|int8 BATCH [CALIBRATION_TABLE]
//   trt_double_smoke --unimplemented     (calls a method the double does not implement: it must stop, naming it)
#include <NvInfer.h>
#include <NvOnnxParser.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "common.h"

namespace {

class Logger : public nvinfer1::ILogger {
 public:
  void log(Severity severity, nvinfer1::AsciiChar const* message) noexcept override {
    static const char* const names[] = {"internal error", "error", "warning", "info", "verbose"};
    std::printf("LOG %s: %s\n", names[static_cast<int>(severity)], message);
  }
};

template <typename T>
struct Deleter {
  void operator()(T* p) const { delete p; }
};
template <typename T>
using Ptr = std::unique_ptr<T, Deleter<T>>;

#if TRT_DOUBLE_CALIBRATORS
class TableCalibrator : public nvinfer1::IInt8EntropyCalibrator2 {
 public:
  explicit TableCalibrator(std::string table) : table_(std::move(table)) {}
  int32_t getBatchSize() const noexcept override { return 1; }
  bool getBatch(void* bindings[], char const* names[], int32_t n) noexcept override { return false; }
  void const* readCalibrationCache(std::size_t& length) noexcept override {
    length = table_.size();
    return table_.data();
  }
  void writeCalibrationCache(void const* ptr, std::size_t length) noexcept override {}

 private:
  std::string table_;
};
#endif

std::string shape(const nvinfer1::Dims& d) { return trt_double::shape_string(trt_double::to_vector(d)); }

int fail(const char* what) {
  std::printf("SMOKE FAILED: %s\n", what);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string(argv[1]) == "--unimplemented") {
    Logger logger;
    Ptr<nvinfer1::IBuilder> builder(nvinfer1::createInferBuilder(logger));
    std::printf("DLA cores: %d\n", builder->getNbDLACores());  // not implemented: the process stops here
    return 0;
  }
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s MODEL.onnx fp32|fp16|int8 BATCH [CALIBRATION_TABLE]\n", argv[0]);
    return 2;
  }
  const std::string precision = argv[2];
  const int batch = std::atoi(argv[3]);
  Logger logger;
  Ptr<nvinfer1::IBuilder> builder(nvinfer1::createInferBuilder(logger));
  if (!builder) return fail("createInferBuilder");
#if TRT_DOUBLE_AT_LEAST(10, 0)
  const nvinfer1::NetworkDefinitionCreationFlags flags = 0;
#else
  const auto flags = 1U << static_cast<uint32_t>(nvinfer1::NetworkDefinitionCreationFlag::kEXPLICIT_BATCH);
#endif
  Ptr<nvinfer1::INetworkDefinition> network(builder->createNetworkV2(flags));
  Ptr<nvonnxparser::IParser> parser(nvonnxparser::createParser(*network, logger));
  if (!parser->parseFromFile(argv[1], 2)) {
    for (int i = 0; i < parser->getNbErrors(); ++i) {
      std::printf("PARSER ERROR node %d: %s\n", parser->getError(i)->node(), parser->getError(i)->desc());
    }
    return 3;
  }
  Ptr<nvinfer1::IBuilderConfig> config(builder->createBuilderConfig());
#if TRT_DOUBLE_AT_LEAST(8, 4)
  config->setMemoryPoolLimit(nvinfer1::MemoryPoolType::kWORKSPACE, 1 << 28);
#else
  config->setMaxWorkspaceSize(1 << 28);
#endif
  config->setProfilingVerbosity(nvinfer1::ProfilingVerbosity::kDETAILED);
  if (precision != "fp32") config->setFlag(nvinfer1::BuilderFlag::kFP16);
  if (precision == "int8") config->setFlag(nvinfer1::BuilderFlag::kINT8);
  nvinfer1::IOptimizationProfile* profile = nullptr;
  for (int32_t i = 0; i < network->getNbInputs(); ++i) {
    nvinfer1::ITensor* in = network->getInput(i);
    std::vector<int64_t> dims = trt_double::to_vector(in->getDimensions());
    if (dims.empty() || dims[0] >= 0) continue;
    dims[0] = batch;
#if TRT_DOUBLE_AT_LEAST(8, 6)
    if (!profile) profile = builder->createOptimizationProfile();
    for (auto s : {nvinfer1::OptProfileSelector::kMIN, nvinfer1::OptProfileSelector::kOPT,
                   nvinfer1::OptProfileSelector::kMAX}) {
      profile->setDimensions(in->getName(), s, trt_double::to_dims(dims));
    }
#else
    in->setDimensions(trt_double::to_dims(dims));
#endif
  }
  if (profile && config->addOptimizationProfile(profile) != 0) return fail("addOptimizationProfile");
#if TRT_DOUBLE_CALIBRATORS
  std::unique_ptr<TableCalibrator> calibrator;
  if (argc > 4) {
    std::ifstream in(argv[4]);
    std::stringstream text;
    text << in.rdbuf();
    calibrator.reset(new TableCalibrator(text.str()));
    config->setInt8Calibrator(calibrator.get());
    if (profile && !config->setCalibrationProfile(profile)) return fail("setCalibrationProfile");
  }
#endif
  Ptr<nvinfer1::ITimingCache> cache(config->createTimingCache(nullptr, 0));
  if (!cache || !config->setTimingCache(*cache, false)) return fail("timing cache");
  Ptr<nvinfer1::IHostMemory> plan(builder->buildSerializedNetwork(*network, *config));
  if (!plan) return 4;
  Ptr<nvinfer1::IHostMemory> cache_data(cache->serialize());
  std::printf("PLAN %zu bytes, timing cache %zu bytes\n", plan->size(), cache_data->size());
  Ptr<nvinfer1::ITimingCache> reloaded(config->createTimingCache(cache_data->data(), cache_data->size()));
  if (!reloaded) return fail("reloading the timing cache");

  Ptr<nvinfer1::IRuntime> runtime(nvinfer1::createInferRuntime(logger));
  const char garbage[128] = "not an engine";
  Ptr<nvinfer1::ICudaEngine> none(runtime->deserializeCudaEngine(garbage, sizeof(garbage)));
  if (none) return fail("garbage deserialized");
  Ptr<nvinfer1::ICudaEngine> engine(runtime->deserializeCudaEngine(plan->data(), plan->size()));
  if (!engine) return fail("deserializeCudaEngine");
#if TRT_DOUBLE_IO_TENSORS
  for (int32_t i = 0; i < engine->getNbIOTensors(); ++i) {
    const char* name = engine->getIOTensorName(i);
    const bool input = engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT;
    std::printf("IO %s %s %d %s", input ? "input" : "output", name, static_cast<int>(engine->getTensorDataType(name)),
                shape(engine->getTensorShape(name)).c_str());
    if (input) std::printf(" opt %s", shape(engine->getProfileShape(name, 0, nvinfer1::OptProfileSelector::kOPT)).c_str());
    std::printf("\n");
  }
#else
  for (int32_t i = 0; i < engine->getNbBindings(); ++i) {
    std::printf("IO %s %s %d %s\n", engine->bindingIsInput(i) ? "input" : "output", engine->getBindingName(i),
                static_cast<int>(engine->getBindingDataType(i)), shape(engine->getBindingDimensions(i)).c_str());
  }
#endif
  Ptr<nvinfer1::IEngineInspector> inspector(engine->createEngineInspector());
  std::printf("JSON %s\nEND JSON\n", inspector->getEngineInformation(nvinfer1::LayerInformationFormat::kJSON));
  std::printf("SMOKE OK\n");
  return 0;
}
