// ONNX in, serialized engine out: the parser, a network fixed at the task's batch, the precision, the
// workspace limit, a timing cache reused across builds, and the engine file.
#include <cuda_runtime_api.h>

#include <chrono>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "cuda_util.h"
#include "log.h"
#include "memory.h"
#include "tensorrt/backend.h"
#include "tensorrt/trt_common.h"
#include "tensorrt/trt_compat.h"

namespace mlmark {
namespace trt {
namespace {

const int kMaxBatch = 4096;
const int64_t kMaxWorkspaceMb = 1 << 20;  // 1 TiB: anything larger is a unit mistake

const char* precision_name(int precision) {
  switch (precision) {
    case MLMARK_PRECISION_FP32:
      return "fp32";
    case MLMARK_PRECISION_FP16:
      return "fp16";
    case MLMARK_PRECISION_INT8:
      return "int8";
    default:
      return "?";
  }
}

std::string basename(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

void validate(const mlmark_trt_build_config& c) {
  if (!c.onnx_path || !*c.onnx_path) throw Error(MLMARK_ERR_INVALID_ARGUMENT, "onnx_path must be given");
  if (!c.engine_path || !*c.engine_path) throw Error(MLMARK_ERR_INVALID_ARGUMENT, "engine_path must be given");
  if (c.precision != MLMARK_PRECISION_FP32 && c.precision != MLMARK_PRECISION_FP16 &&
      c.precision != MLMARK_PRECISION_INT8) {
    throw Error(MLMARK_ERR_INVALID_ARGUMENT, "precision must be fp32, fp16 or int8 (0, 1, 2), got " + std::to_string(c.precision));
  }
  if (c.batch < 1 || c.batch > kMaxBatch) {
    throw Error(MLMARK_ERR_INVALID_ARGUMENT, "batch must be within 1.." + std::to_string(kMaxBatch) + ", got " + std::to_string(c.batch));
  }
  if (c.workspace_mb < 1 || c.workspace_mb > kMaxWorkspaceMb) {
    throw Error(MLMARK_ERR_INVALID_ARGUMENT, "workspace_mb must be within 1.." + std::to_string(kMaxWorkspaceMb) +
                                                 ", got " + std::to_string(c.workspace_mb));
  }
  if (c.calibration_table && *c.calibration_table && c.precision != MLMARK_PRECISION_INT8) {
    throw Error(MLMARK_ERR_INVALID_ARGUMENT, "a calibration table is for int8 builds only");
  }
}

// Every network input gets the task's batch as its first dimension. A dynamic batch (-1) is fixed as
// compat::fix_dynamic_inputs says: an optimization profile with min = opt = max from TensorRT 8.6, the
// network's own input shape before. Other dynamic dimensions and a different fixed batch are refused.
// Returns the profile, or null when there is none.
const nvinfer1::IOptimizationProfile* fix_batch(nvinfer1::IBuilder& builder, nvinfer1::INetworkDefinition& network,
                                                nvinfer1::IBuilderConfig& config, int batch, const std::string& model) {
  std::vector<compat::DynamicInput> dynamic;
  for (int32_t i = 0; i < network.getNbInputs(); ++i) {
    nvinfer1::ITensor* input = network.getInput(i);
    if (!input || input->isShapeTensor()) continue;
    std::vector<int64_t> shape = to_vector(input->getDimensions());
    if (shape.empty()) continue;
    const std::string name = input->getName() ? input->getName() : "?";
    if (shape[0] >= 0 && shape[0] != batch) {
      throw Error(MLMARK_ERR_UNSUPPORTED, model + " has a fixed batch of " + std::to_string(shape[0]) + " (input '" +
                                              name + "' " + shape_string(shape) + ") but the task asks for batch " +
                                              std::to_string(batch) + ": export the ONNX with a dynamic batch dimension");
    }
    for (std::size_t d = 1; d < shape.size(); ++d) {
      if (shape[d] < 0) {
        throw Error(MLMARK_ERR_UNSUPPORTED, "input '" + name + "' of " + model + " has a dynamic dimension " +
                                                std::to_string(d) + " besides the batch " + shape_string(shape) +
                                                ": export the ONNX with fixed non-batch dimensions");
      }
    }
    if (shape[0] < 0) {
      shape[0] = batch;
      dynamic.push_back(compat::DynamicInput{input, shape});
    }
    log(MLMARK_LOG_DEBUG, "engine build: input '%s' %s", name.c_str(), shape_string(shape).c_str());
  }
  return compat::fix_dynamic_inputs(builder, config, dynamic);
}

struct NetworkTypes {
  bool quantized = false;  // has Q/DQ layers (explicit quantization)
  bool half = false;       // has float16 tensors
  std::set<std::string> tensor_names;
};

NetworkTypes network_types(nvinfer1::INetworkDefinition& network) {
  NetworkTypes t;
  for (int32_t i = 0; i < network.getNbInputs(); ++i) {
    nvinfer1::ITensor* in = network.getInput(i);
    if (!in) continue;
    if (in->getName()) t.tensor_names.insert(in->getName());
    t.half = t.half || in->getType() == nvinfer1::DataType::kHALF;
  }
  for (int32_t i = 0; i < network.getNbLayers(); ++i) {
    nvinfer1::ILayer* layer = network.getLayer(i);
    if (!layer) continue;
    const nvinfer1::LayerType type = layer->getType();
    t.quantized = t.quantized || type == nvinfer1::LayerType::kQUANTIZE || type == nvinfer1::LayerType::kDEQUANTIZE;
    for (int32_t j = 0; j < layer->getNbOutputs(); ++j) {
      nvinfer1::ITensor* out = layer->getOutput(j);
      if (!out) continue;
      if (out->getName()) t.tensor_names.insert(out->getName());
      t.half = t.half || out->getType() == nvinfer1::DataType::kHALF;
    }
  }
  return t;
}

// A TensorRT calibration table is a header line ("TRT-8601-EntropyCalibration2") and one "tensor: scale"
// line per tensor. A table made for another model names none of this network's tensors; TensorRT would
// then try to calibrate with no data and fail with a message that does not say why.
void check_table(const std::string& table, const std::string& path, const NetworkTypes& types,
                 const std::string& model) {
  std::istringstream in(table);
  std::string header, line;
  if (!std::getline(in, header) || header.compare(0, 4, "TRT-") != 0) {
    throw Error(MLMARK_ERR_MODEL, "the calibration table " + path + " is not a TensorRT calibration table (its first line "
                                  "should start with 'TRT-')");
  }
  std::size_t entries = 0, known = 0;
  while (std::getline(in, line)) {
    const std::size_t colon = line.rfind(':');
    if (colon == std::string::npos) continue;
    ++entries;
    if (types.tensor_names.count(line.substr(0, colon))) ++known;
  }
  if (known == 0) {
    throw Error(MLMARK_ERR_MODEL, "the calibration table " + path + " has scales for " + std::to_string(entries) +
                                      " tensors, none of them in " + model + ": it was made for another model");
  }
  log(known * 2 < entries ? MLMARK_LOG_WARNING : MLMARK_LOG_DEBUG,
      "calibration table %s: %zu of its %zu tensors are in %s (%s)", path.c_str(), known, entries, model.c_str(),
      header.c_str());
}

void set_precision(nvinfer1::IBuilderConfig& config, nvinfer1::INetworkDefinition& network,
                   const mlmark_trt_build_config& c, const std::string& model, bool fast_fp16,
                   const nvinfer1::IOptimizationProfile* profile, std::vector<std::unique_ptr<compat::Attachment>>* keep) {
  const bool fp16 = c.precision == MLMARK_PRECISION_FP16;
  const bool int8 = c.precision == MLMARK_PRECISION_INT8;
  if (!fp16 && !int8) return;
  const NetworkTypes types = network_types(network);
  const bool flags = compat::set_precision_flags(config, fp16, int8, fast_fp16);
  const std::string table_path = c.calibration_table ? c.calibration_table : "";
  if (int8) {
    if (!table_path.empty()) {
      if (types.quantized) {
        log(MLMARK_LOG_WARNING, "%s already has Q/DQ layers: their scales are used and the calibration table %s is not",
            model.c_str(), table_path.c_str());
      } else {
        const std::string table = read_file(table_path, "calibration table");
        check_table(table, table_path, types, model);
        keep->push_back(compat::attach_calibration_table(config, table, c.batch, profile));
      }
    } else if (!types.quantized) {
      throw Error(MLMARK_ERR_INVALID_ARGUMENT,
                  "an int8 build needs a calibration table (TensorRT " + compat::header_version() +
                      (compat::features().implicit_int8 ? " takes one" : " does not: give the Q/DQ ONNX") +
                      ") or a quantized ONNX with Q/DQ layers; " + model + " has no Q/DQ layers and no table was given");
    }
  }
  if (fp16 && !flags && !types.half) {
    throw Error(MLMARK_ERR_UNSUPPORTED, "TensorRT " + compat::header_version() +
                                            " builds strongly typed networks, where the model's own types set the "
                                            "precision: fp16 needs an ONNX with float16 tensors, and " + model +
                                            " has none");
  }
}

struct TimingCache {
  Ptr<nvinfer1::ITimingCache> cache;
  bool loaded = false;
};

TimingCache load_timing_cache(nvinfer1::IBuilderConfig& config, const std::string& path) {
  TimingCache t;
  std::string blob;
  if (!path.empty() && file_exists(path)) {
    try {
      blob = read_file(path, "timing cache");
    } catch (const Error& e) {
      log(MLMARK_LOG_WARNING, "%s; building without it", e.what());
    }
  }
  if (!blob.empty()) {
    ErrorCapture quiet;  // a cache from another device or release is expected now and then, not an error
    t.cache.reset(config.createTimingCache(blob.data(), blob.size()));
    if (t.cache && config.setTimingCache(*t.cache, false)) {
      t.loaded = true;
      log(MLMARK_LOG_INFO, "engine build: reusing the timing cache %s (%s)", path.c_str(), format_bytes(blob.size()).c_str());
      return t;
    }
    log(MLMARK_LOG_WARNING, "the timing cache %s is from another GPU or TensorRT release, or damaged (%s); starting a "
        "new one", path.c_str(), quiet.summary("no detail").c_str());
  }
  t.cache.reset(config.createTimingCache(nullptr, 0));
  if (t.cache) config.setTimingCache(*t.cache, false);
  return t;
}

bool save_timing_cache(const nvinfer1::IBuilderConfig& config, const std::string& path) {
  try {
    const nvinfer1::ITimingCache* cache = config.getTimingCache();
    if (!cache) return false;
    Ptr<nvinfer1::IHostMemory> data(cache->serialize());
    if (!data || data->size() == 0) return false;
    write_file_atomic(path, data->data(), data->size(), "timing cache");
    return true;
  } catch (const Error& e) {
    // The engine is built; a cache that cannot be saved costs only the next build's time.
    log(MLMARK_LOG_WARNING, "%s", e.what());
    return false;
  }
}

// The device the build runs on, made current; a warning where it has no fast kernels for the precision,
// and an error where the workspace cannot fit.
DeviceProps prepare_device(const mlmark_trt_build_config& c, std::size_t workspace, bool* fast_fp16) {
  const DeviceProps props = query_device(c.device);  // also makes the device current
  bool fast_int8 = false, from_builder = false;
  compat::fast_precisions(props.cc_major, props.cc_minor, true, fast_fp16, &fast_int8, &from_builder);
  if ((c.precision == MLMARK_PRECISION_FP16 && !*fast_fp16) || (c.precision == MLMARK_PRECISION_INT8 && !fast_int8)) {
    log(MLMARK_LOG_WARNING, "%s (sm_%d%d) has no fast %s; TensorRT may build slower kernels", props.name.c_str(),
        props.cc_major, props.cc_minor, precision_name(c.precision));
  }
  std::size_t free_bytes = 0, total_bytes = 0;
  check_cuda(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
  if (workspace > free_bytes) {
    throw Error(MLMARK_ERR_OUT_OF_MEMORY, "the build workspace of " + std::to_string(c.workspace_mb) + " MiB exceeds the " +
                                              format_bytes(free_bytes) + " free on " + props.name +
                                              ": give a smaller workspace");
  }
  return props;
}

// The ONNX file parsed into the network; Error naming each node the parser rejected.
void parse(nvonnxparser::IParser& parser, const std::string& onnx, ErrorCapture& errors) {
  log(MLMARK_LOG_INFO, "engine build: parsing %s", onnx.c_str());
  if (parser.parseFromFile(onnx.c_str(), static_cast<int>(nvinfer1::ILogger::Severity::kWARNING))) return;
  std::string all;
  const int n = parser.getNbErrors();
  for (int i = 0; i < n; ++i) {
    const nvonnxparser::IParserError* e = parser.getError(i);
    if (!e) continue;
    const std::string text = compat::parser_error(*e);
    log(MLMARK_LOG_DEBUG, "ONNX parser error %d: %s", i, text.c_str());
    all += (all.empty() ? "" : "; ") + text;
  }
  if (all.empty()) all = errors.summary("no error reported");
  throw Error(MLMARK_ERR_MODEL, "the TensorRT " + compat::header_version() + " ONNX parser rejected " + onnx + ": " + all);
}

// The serialized engine; Error saying why there is none (out of memory: with what to make smaller).
Ptr<nvinfer1::IHostMemory> build_plan(nvinfer1::IBuilder& builder, nvinfer1::INetworkDefinition& network,
                                      nvinfer1::IBuilderConfig& config, const mlmark_trt_build_config& c,
                                      const std::string& model, ErrorCapture& errors) {
  std::unique_ptr<compat::Attachment> progress = compat::attach_progress(config);
  Ptr<nvinfer1::IHostMemory> plan(builder.buildSerializedNetwork(network, config));
  progress.reset();
  if (plan && plan->size() > 0) return plan;
  if (errors.out_of_memory()) {
    throw Error(MLMARK_ERR_OUT_OF_MEMORY, "building the engine for " + model + " ran out of memory (" +
                                              errors.summary("no detail", 1) + "): give a smaller workspace (now " +
                                              std::to_string(c.workspace_mb) + " MiB) or batch (now " +
                                              std::to_string(c.batch) + ")");
  }
  throw Error(MLMARK_ERR_TENSORRT, "TensorRT could not build an engine from " + model + ": " + errors.summary("no detail"));
}

}  // namespace

void build_engine(const mlmark_trt_build_config& c, mlmark_trt_build_result* result) {
  validate(c);
  const std::string onnx = c.onnx_path;
  const std::string model = basename(onnx);
  if (!file_exists(onnx)) throw Error(MLMARK_ERR_MODEL, "the ONNX model " + onnx + " does not exist");
  const std::size_t workspace = static_cast<std::size_t>(c.workspace_mb) << 20;
  bool fast_fp16 = false;
  const DeviceProps props = prepare_device(c, workspace, &fast_fp16);

  const auto started = std::chrono::steady_clock::now();
  ErrorCapture errors;
  Ptr<nvinfer1::IBuilder> builder(nvinfer1::createInferBuilder(logger()));
  if (!builder) throw Error(MLMARK_ERR_TENSORRT, "creating the TensorRT builder failed: " + errors.summary("no detail"));
  Ptr<nvinfer1::INetworkDefinition> network(compat::create_network(*builder));
  if (!network) throw Error(MLMARK_ERR_TENSORRT, "creating a TensorRT network failed: " + errors.summary("no detail"));
  Ptr<nvonnxparser::IParser> parser(nvonnxparser::createParser(*network, logger()));
  if (!parser) throw Error(MLMARK_ERR_TENSORRT, "creating the ONNX parser failed: " + errors.summary("no detail"));
  parse(*parser, onnx, errors);

  Ptr<nvinfer1::IBuilderConfig> config(builder->createBuilderConfig());
  if (!config) throw Error(MLMARK_ERR_TENSORRT, "creating the builder config failed: " + errors.summary("no detail"));
  const nvinfer1::IOptimizationProfile* profile = fix_batch(*builder, *network, *config, c.batch, model);
  compat::set_workspace(*config, workspace);
  if (c.detailed_profiling) config->setProfilingVerbosity(nvinfer1::ProfilingVerbosity::kDETAILED);
  std::vector<std::unique_ptr<compat::Attachment>> keep;  // the calibrator: alive until the build ends
  set_precision(*config, *network, c, model, fast_fp16, profile, &keep);
  const std::string cache_path = c.timing_cache ? c.timing_cache : "";
  TimingCache cache = load_timing_cache(*config, cache_path);

  log(MLMARK_LOG_INFO, "engine build: optimizing %s for %s at batch %d, %s, workspace %lld MiB (%s); this "
      "takes minutes on a small board", model.c_str(), props.name.c_str(), c.batch, precision_name(c.precision),
      static_cast<long long>(c.workspace_mb), runtime_label().c_str());
  Ptr<nvinfer1::IHostMemory> plan = build_plan(*builder, *network, *config, c, model, errors);
  keep.clear();
  write_file(c.engine_path, plan->data(), plan->size(), "engine");
  const double build_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const bool saved = !cache_path.empty() && cache.cache && save_timing_cache(*config, cache_path);
  log(MLMARK_LOG_INFO, "engine build: %s written (%s) in %.1f s", c.engine_path, format_bytes(plan->size()).c_str(), build_s);

  result->timing_cache_loaded = cache.loaded ? 1 : 0;
  result->timing_cache_saved = saved ? 1 : 0;
  result->build_s = build_s;
  result->engine_bytes = static_cast<uint64_t>(plan->size());
}

}  // namespace trt
}  // namespace mlmark
