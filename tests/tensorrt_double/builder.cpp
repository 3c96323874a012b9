// The test double's build side: the network the ONNX parser fills, the builder config, optimization profiles,
// the timing cache, and the build, which decides each layer's precision as TensorRT's flags, calibration
// scales or Q/DQ layers allow and writes the plan (plan.h).
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "double.h"
#include "kernel.h"
#include "onnx_reader.h"

namespace trt_double {
namespace {

using nvinfer1::DataType;
using nvinfer1::LayerType;

const int64_t kDefaultKernelUs = 100;
// An engine stores weights at its layers' precision; the double's plan holds an eighth of that in padding.
const int kWeightScale = 8;

bool is_compute(const std::string& op) { return op == "Conv" || op == "ConvTranspose" || op == "Gemm" || op == "MatMul"; }

bool is_fusable_activation(const std::string& op) {
  return op == "Relu" || op == "Clip" || op == "LeakyRelu" || op == "Sigmoid" || op == "Tanh";
}

LayerType layer_type_of(const std::string& op) {
  if (op == "Conv") return LayerType::kCONVOLUTION;
  if (op == "ConvTranspose") return LayerType::kDECONVOLUTION;
  if (op == "Gemm" || op == "MatMul") return LayerType::kMATRIX_MULTIPLY;
  if (op == "QuantizeLinear") return LayerType::kQUANTIZE;
  if (op == "DequantizeLinear") return LayerType::kDEQUANTIZE;
  if (is_fusable_activation(op) || op == "Elu" || op == "Selu" || op == "HardSigmoid" || op == "Softplus") {
    return LayerType::kACTIVATION;
  }
  if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div" || op == "Max" || op == "Min" || op == "Pow") {
    return LayerType::kELEMENTWISE;
  }
  if (op == "MaxPool" || op == "AveragePool" || op == "GlobalAveragePool" || op == "GlobalMaxPool") {
    return LayerType::kPOOLING;
  }
  if (op == "Reshape" || op == "Flatten" || op == "Transpose" || op == "Squeeze" || op == "Unsqueeze") {
    return LayerType::kSHUFFLE;
  }
  if (op == "Concat") return LayerType::kCONCATENATION;
  if (op == "Softmax") return LayerType::kSOFTMAX;
  if (op == "Constant") return LayerType::kCONSTANT;
  if (op == "BatchNormalization") return LayerType::kSCALE;
  if (op == "ReduceMean" || op == "ReduceSum" || op == "ReduceMax") return LayerType::kREDUCE;
  if (op == "Slice") return LayerType::kSLICE;
  if (op == "Shape") return LayerType::kSHAPE;
  if (op == "Gather") return LayerType::kGATHER;
  if (op == "Resize") return LayerType::kRESIZE;
  if (op == "Pad") return LayerType::kPADDING;
  if (op == "Exp" || op == "Log" || op == "Sqrt" || op == "Neg" || op == "Abs" || op == "Reciprocal") {
    return LayerType::kUNARY;
  }
  return LayerType::kIDENTITY;  // Identity, Cast, Dropout and what the double does not tell apart
}

// The inspector's LayerType and ParameterType for an engine layer made from an ONNX operator.
void inspector_names(const std::string& op, std::string* layer_type, std::string* parameter_type) {
  struct Names {
    const char* op;
    const char* layer;
    const char* parameter;
  };
  static const Names names[] = {
      {"Conv", "CaskConvolution", "Convolution"},        {"ConvTranspose", "CaskDeconvolution", "Deconvolution"},
      {"Gemm", "CaskGemmMatrixMultiply", "MatrixMultiply"}, {"MatMul", "CaskGemmMatrixMultiply", "MatrixMultiply"},
      {"MaxPool", "CaskPooling", "Pooling"},             {"AveragePool", "CaskPooling", "Pooling"},
      {"GlobalAveragePool", "CaskPooling", "Pooling"},   {"GlobalMaxPool", "CaskPooling", "Pooling"},
      {"Softmax", "CaskSoftMaxV2", "SoftMax"},           {"Concat", "Concatenation", "Concatenation"},
  };
  for (const Names& n : names) {
    if (op == n.op) {
      *layer_type = n.layer;
      *parameter_type = n.parameter;
      return;
    }
  }
  switch (layer_type_of(op)) {
    case LayerType::kACTIVATION:
    case LayerType::kELEMENTWISE:
    case LayerType::kUNARY:
      *layer_type = "PointWiseV2";
      *parameter_type = "PointWise";
      return;
    case LayerType::kSHUFFLE:
      *layer_type = "Shuffle";
      *parameter_type = "Shuffle";
      return;
    default:
      *layer_type = op;
      *parameter_type = op;
  }
}

DataType data_type_of(int32_t onnx) {
  switch (onnx) {
    case kOnnxFloat16:
      return DataType::kHALF;
    case kOnnxInt8:
      return DataType::kINT8;
    case kOnnxInt32:
      return DataType::kINT32;
    case kOnnxBool:
      return DataType::kBOOL;
#if TRT_DOUBLE_AT_LEAST(8, 5)
    case kOnnxUint8:
      return DataType::kUINT8;
#else
    case kOnnxUint8:
      return DataType::kINT8;
#endif
#if TRT_DOUBLE_AT_LEAST(10, 0)
    case kOnnxInt64:
      return DataType::kINT64;
#else
    case kOnnxInt64:  // TensorRT 8's parser casts INT64 down
      return DataType::kINT32;
#endif
    default:
      return DataType::kFLOAT;
  }
}

int precision_bytes(const std::string& precision) {
  if (precision == "int8") return 1;
  return precision == "fp16" ? 2 : 4;
}

// "Error Code <n>: <category> (<detail>)", as TensorRT's own errors read; the backend looks for the wording.
void error(nvinfer1::ILogger* logger, int code, const char* category, const std::string& detail) {
  log(logger, Severity::kERROR, "Error Code " + std::to_string(code) + ": " + category + " (" + detail + ")");
}

// MLMARK_TRT_DOUBLE_FALLBACKS names a file holding a count: while it is above 0, each fp16/int8 build takes
// one and builds every layer in fp32, as TensorRT sometimes does (NVIDIA/TensorRT issue 3160). The file is
// locked, since builds run in child processes.
bool take_fallback(nvinfer1::ILogger* logger) {
  const std::string path = env("MLMARK_TRT_DOUBLE_FALLBACKS");
  if (path.empty()) return false;
  std::FILE* f = std::fopen(path.c_str(), "r+");
  if (!f) {
    log(logger, Severity::kWARNING, "MLMARK_TRT_DOUBLE_FALLBACKS=" + path + " cannot be opened: no fallback");
    return false;
  }
  flock(fileno(f), LOCK_EX);
  long left = 0;
  if (std::fscanf(f, "%ld", &left) != 1) left = 0;
  const bool take = left > 0;
  if (take) {
    std::rewind(f);
    if (ftruncate(fileno(f), 0) == 0) std::fprintf(f, "%ld\n", left - 1);
    std::fflush(f);
  }
  flock(fileno(f), LOCK_UN);
  std::fclose(f);
  return take;
}

#if TRT_DOUBLE_CALIBRATORS
// A calibration cache in TensorRT's text form: "TRT-<version>-<algorithm>" and "<tensor>: <hex scale>" lines.
bool parse_table(const std::string& text, std::string* header, std::map<std::string, std::string>* scales) {
  std::istringstream in(text);
  std::string line;
  if (!std::getline(in, line)) return false;
  *header = line;
  while (std::getline(in, line)) {
    const std::size_t colon = line.rfind(':');
    if (colon == std::string::npos) continue;
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(' '));
    (*scales)[line.substr(0, colon)] = value;
  }
  return true;
}

const char* algorithm_name(nvinfer1::CalibrationAlgoType algorithm) {
  switch (algorithm) {
    case nvinfer1::CalibrationAlgoType::kLEGACY_CALIBRATION:
      return "LegacyCalibration";
    case nvinfer1::CalibrationAlgoType::kENTROPY_CALIBRATION:
      return "EntropyCalibration";
    case nvinfer1::CalibrationAlgoType::kENTROPY_CALIBRATION_2:
      return "EntropyCalibration2";
    case nvinfer1::CalibrationAlgoType::kMINMAX_CALIBRATION:
      return "MinMaxCalibration";
  }
  return "?";
}
#endif

// Build-time errors end the build with TensorRT's logger told why; this carries one to the top.
struct BuildError {
  std::string message;
};

// One network layer (or an operator and the activation fused into it) becoming one engine layer.
struct Group {
  const LayerDouble* layer;
  const LayerDouble* fused = nullptr;  // a Relu/Clip/... after a convolution or matrix multiply
  const std::vector<TensorDouble*>& outputs() const { return fused ? fused->outputs() : layer->outputs(); }
  std::string name() const { return fused ? layer->name() + " + " + fused->name() : layer->name(); }
};

class Build {
 public:
  Build(NetworkDouble& network, BuilderConfigDouble& config, nvinfer1::ILogger* logger)
      : net_(network), cfg_(config), logger_(logger) {}

  std::string run() {
    const std::string fail = env("MLMARK_TRT_DOUBLE_BUILD_FAIL");
    if (fail == "oom") {
      error(logger_, 2, "OutOfMemory",
            "the test double fails this build's workspace allocation of " + std::to_string(cfg_.workspace()) +
                " bytes as asked by MLMARK_TRT_DOUBLE_BUILD_FAIL=oom");
      throw BuildError{"out of memory"};
    }
    if (fail == "error") {
      error(logger_, 10, "Internal Error", "the test double fails this build as asked by MLMARK_TRT_DOUBLE_BUILD_FAIL=error");
      throw BuildError{"failed"};
    }
    if (!net_.explicit_batch()) {
      error(logger_, 3, "API Usage Error", "the network has an implicit batch dimension");
      throw BuildError{"implicit batch"};
    }
    plan_.release = release_number();
    plan_.verbosity = static_cast<int32_t>(cfg_.verbosity());
    plan_.kernel_ns = kernel_ns();
    io();
    precision_mode();
#if TRT_DOUBLE_PROGRESS
    nvinfer1::IProgressMonitor* monitor = cfg_.monitor();
    if (monitor) monitor->phaseStart(kPhase, nullptr, 2);
#endif
    layers();
#if TRT_DOUBLE_PROGRESS
    if (monitor && !monitor->stepComplete(kPhase, 0)) cancelled();
#endif
    timing_cache();
    if (env("MLMARK_TRT_DOUBLE_MYELIN") == "1") myelin();
    plan_.weight_bytes = weight_bytes();
    std::string data = serialize(plan_);
#if TRT_DOUBLE_PROGRESS
    if (monitor) {
      if (!monitor->stepComplete(kPhase, 1)) cancelled();
      monitor->phaseFinish(kPhase);
    }
#endif
    log(logger_, Severity::kINFO, "built " + std::to_string(plan_.layers.size()) + " layers, batch " +
                                      std::to_string(plan_.batch) + ", " + summary() + ", a kernel of " +
                                      std::to_string(plan_.kernel_ns / 1000) + " us per inference, " +
                                      std::to_string(data.size()) + " bytes");
    return data;
  }

 private:
#if TRT_DOUBLE_PROGRESS
  static constexpr const char* kPhase = "Building the test double's engine";
  static constexpr const char* kLayerPhase = "Choosing layer precisions";
  void cancelled() {
    error(logger_, 2, "Internal Error", "the build was cancelled by the progress monitor");
    throw BuildError{"cancelled"};
  }
#endif

  static int64_t kernel_ns() {
    const std::string us = env("MLMARK_TRT_DOUBLE_KERNEL_US", std::to_string(kDefaultKernelUs));
    char* end = nullptr;
    const double value = std::strtod(us.c_str(), &end);
    if (end == us.c_str() || value < 0 || value > 1e7) return kDefaultKernelUs * 1000;
    return static_cast<int64_t>(value * 1000.0);
  }

  // Inputs and outputs: a dynamic dimension needs optimization profile 0 to give it, min = max being all
  // the double supports (MLMark's engines run at one batch).
  void io() {
    const ProfileDouble* profile = cfg_.profiles().empty() ? nullptr : cfg_.profiles().front();
    int64_t batch = -1;
    for (TensorDouble* t : net_.inputs()) {
      PlanIO io;
      io.name = t->name();
      io.is_input = true;
      io.dtype = static_cast<int32_t>(t->getType());
      io.dims = t->dims();
      const bool dynamic = std::find(io.dims.begin(), io.dims.end(), -1) != io.dims.end();
      if (dynamic) {
        const std::vector<std::vector<int64_t>> shapes = profile ? profile->shapes(t->name())
                                                                 : std::vector<std::vector<int64_t>>();
        if (!profile) {
          error(logger_, 4, "Internal Error",
                "Network has dynamic or shape inputs, but no optimization profile has been defined.");
          throw BuildError{"no profile"};
        }
        if (shapes.size() != 3) {
          error(logger_, 4, "Internal Error", t->name() + ": dynamic input is missing dimensions in profile 0.");
          throw BuildError{"profile incomplete"};
        }
        for (std::size_t s = 0; s < 3; ++s) {
          if (shapes[s].size() != io.dims.size()) {
            error(logger_, 4, "Internal Error", t->name() + ": profile 0 has a shape of another rank");
            throw BuildError{"profile rank"};
          }
          for (std::size_t d = 0; d < io.dims.size(); ++d) {
            if (io.dims[d] >= 0 && shapes[s][d] != io.dims[d]) {
              error(logger_, 4, "Internal Error", t->name() + ": profile 0 changes a fixed dimension");
              throw BuildError{"profile fixed dim"};
            }
          }
        }
        if (shapes[0] != shapes[2]) {
          error(logger_, 3, "API Usage Error",
                t->name() + ": the test double builds only profiles with min = max (it runs one batch)");
          throw BuildError{"profile range"};
        }
        io.min = shapes[0];
        io.opt = shapes[1];
        io.max = shapes[2];
        plan_.flags |= kPlanProfile;
        if (batch < 0) batch = io.opt.empty() ? 1 : io.opt[0];
      } else if (batch < 0) {
        batch = io.dims.empty() ? 1 : io.dims[0];
      }
      plan_.io.push_back(io);
    }
    plan_.batch = static_cast<int32_t>(batch < 0 ? 1 : batch);
    for (TensorDouble* t : net_.outputs()) {
      PlanIO io;
      io.name = t->name();
      io.dtype = static_cast<int32_t>(t->getType());
      if (!t->known()) {
        error(logger_, 4, "Internal Error", "the test double does not know the shape of output " + t->name());
        throw BuildError{"output shape"};
      }
      io.dims = t->dims();
      for (std::size_t d = 0; d < io.dims.size(); ++d) {
        if (io.dims[d] >= 0) continue;
        if (d != 0) {
          error(logger_, 4, "Internal Error",
                "the test double infers only a dynamic batch (dimension 0), not dimension " + std::to_string(d) +
                    " of output " + t->name());
          throw BuildError{"output dim"};
        }
        // The batch follows the inputs: fixed when they are, the profile's otherwise.
        if (!(plan_.flags & kPlanProfile)) io.dims[d] = plan_.batch;
      }
      plan_.io.push_back(io);
    }
    int64_t bytes = 0;
    for (const PlanIO& io : plan_.io) {
      int64_t n = element_bytes(io.dtype);
      for (int64_t d : io.dims) n *= d < 0 ? plan_.batch : d;
      bytes += n;
    }
    plan_.device_memory = 2 * bytes + (1 << 20);  // activations: about twice the I/O, and a MiB of scratch
    const std::string mb = env("MLMARK_TRT_DOUBLE_CONTEXT_MB");  // an engine whose contexts need more than a GPU has
    if (!mb.empty()) plan_.device_memory = static_cast<int64_t>(std::strtoll(mb.c_str(), nullptr, 10)) << 20;
  }

  void precision_mode() {
    fp16_ = cfg_.getFlag(nvinfer1::BuilderFlag::kFP16);
    int8_ = cfg_.getFlag(nvinfer1::BuilderFlag::kINT8);
    for (const auto& l : net_.layers()) qdq_ = qdq_ || l->op() == "QuantizeLinear" || l->op() == "DequantizeLinear";
    if (fp16_) plan_.flags |= kPlanFp16;
    if (int8_) plan_.flags |= kPlanInt8;
    if (qdq_ && !int8_) {
      error(logger_, 4, "Internal Error", "the network has Q/DQ layers, and INT8 is not enabled in the builder config");
      throw BuildError{"qdq without int8"};
    }
    if (qdq_) plan_.flags |= kPlanQdq;
    if (int8_ && !qdq_) calibration();
    if ((fp16_ || int8_) && take_fallback(logger_)) {
      fallback_ = true;
      plan_.flags |= kPlanFallback;
      log(logger_, Severity::kWARNING,
          "building every layer in fp32 although reduced precision is allowed, as TensorRT sometimes does "
          "(NVIDIA/TensorRT issue 3160), because MLMARK_TRT_DOUBLE_FALLBACKS said so");
    }
  }

  // Implicit INT8: every scale from the calibrator's cache, which TensorRT takes only when its header names
  // this release and the calibrator's algorithm; otherwise it calibrates from the calibrator's batches.
  void calibration() {
#if TRT_DOUBLE_CALIBRATORS
    nvinfer1::IInt8Calibrator* calibrator = cfg_.calibrator();
    if (!calibrator) {
      log(logger_, Severity::kWARNING,
          "INT8 is enabled without a calibrator or Q/DQ layers: no tensor has a scale, layers run in FP32/FP16");
      return;
    }
    if ((plan_.flags & kPlanProfile) && !cfg_.calibration_profile()) {
      error(logger_, 4, "Internal Error",
            "a calibration profile must be set when INT8 calibration serves a network with runtime dimensions");
      throw BuildError{"calibration profile"};
    }
    std::size_t length = 0;
    const void* cache = calibrator->readCalibrationCache(length);
    const std::string expected = "TRT-" + std::to_string(release_number()) + "-" +
                                 algorithm_name(calibrator->getAlgorithm());
    std::string header;
    std::map<std::string, std::string> scales;
    if (cache && length && parse_table(std::string(static_cast<const char*>(cache), length), &header, &scales) &&
        header == expected) {
      scales_ = scales;
      plan_.flags |= kPlanCalibrationTable;
      log(logger_, Severity::kINFO, "calibration cache " + header + ": " + std::to_string(scales_.size()) + " scales");
      return;
    }
    log(logger_, Severity::kWARNING,
        "the calibration cache " + (header.empty() ? std::string("is empty") : "'" + header + "' is not this release's (" +
                                                                                 expected + ")") +
            ": calibrating from the calibrator's batches");
    std::vector<void*> bindings(net_.inputs().size(), nullptr);
    std::vector<const char*> names;
    for (TensorDouble* t : net_.inputs()) names.push_back(t->getName());
    if (calibrator->getBatchSize() < 1 ||
        !calibrator->getBatch(bindings.data(), names.data(), static_cast<int32_t>(bindings.size()))) {
      error(logger_, 2, "Internal Error",
            "Calibration failure occurred with no scaling factors detected. This could be due to no int8 calibrator "
            "or insufficient custom scales for network layers.");
      throw BuildError{"calibration"};
    }
    error(logger_, 2, "Internal Error", "the test double cannot calibrate from data: give a calibration cache");
    throw BuildError{"calibration data"};
#else
    log(logger_, Severity::kWARNING, "INT8 is enabled without Q/DQ layers: layers run in FP32/FP16");
#endif
  }

  std::string precision_of(const TensorDouble* t) const {
    if (!t) return "fp32";
    auto it = tensor_precision_.find(t->name());
    return it == tensor_precision_.end() ? "fp32" : it->second;
  }

  bool scaled(const TensorDouble* t) const { return t && scales_.count(t->name()) != 0; }

  std::vector<Group> groups() const {
    std::map<std::string, std::vector<const LayerDouble*>> consumers;
    for (const auto& l : net_.layers()) {
      for (TensorDouble* t : l->inputs()) {
        if (t) consumers[t->name()].push_back(l.get());
      }
    }
    std::vector<Group> out;
    std::set<const LayerDouble*> fused;
    for (const auto& l : net_.layers()) {
      if (fused.count(l.get())) continue;
      Group g{l.get()};
      if (is_compute(l->op()) && !l->outputs().empty()) {
        const std::vector<const LayerDouble*>& next = consumers[l->outputs()[0]->name()];
        if (next.size() == 1 && is_fusable_activation(next[0]->op()) && !l->outputs()[0]->isNetworkOutput()) {
          g.fused = next[0];
          fused.insert(next[0]);
        }
      }
      out.push_back(g);
    }
    return out;
  }

  void layers() {
    for (TensorDouble* t : net_.inputs()) tensor_precision_[t->name()] = "fp32";
    std::map<std::string, int> consumed_by_q;  // tensor -> number of QuantizeLinear consumers
    std::map<std::string, int> consumers;
    for (const auto& l : net_.layers()) {
      for (TensorDouble* t : l->inputs()) {
        if (!t) continue;
        ++consumers[t->name()];
        if (l->op() == "QuantizeLinear") ++consumed_by_q[t->name()];
      }
    }
    const std::string wide = fp16_ && !fallback_ ? "fp16" : "fp32";
    const std::vector<Group> all = groups();
#if TRT_DOUBLE_PROGRESS
    nvinfer1::IProgressMonitor* monitor = cfg_.monitor();
    if (monitor) monitor->phaseStart(kLayerPhase, kPhase, static_cast<int32_t>(all.size()));
#endif
    int32_t step = 0;
    for (const Group& g : all) {
      const LayerDouble* l = g.layer;
      const std::string& op = l->op();
      TensorDouble* in0 = l->inputs().empty() ? nullptr : l->inputs()[0];
      TensorDouble* out0 = g.outputs().empty() ? nullptr : g.outputs()[0];
      std::string precision;
      std::string out_precision;
      bool engine_layer = true;
      if (op == "QuantizeLinear") {
        precision = out_precision = "int8";
        engine_layer = false;  // fused into its neighbours, as TensorRT does
      } else if (op == "DequantizeLinear") {
        precision = out_precision = "int8";
        dequantized_.insert(out0 ? out0->name() : "");
        engine_layer = false;
      } else if (op == "Constant" || op == "Identity" || op == "Cast" || op == "Dropout") {
        precision = out_precision = precision_of(in0);
        engine_layer = false;
      } else if (is_compute(op)) {
        if (fallback_) {
          precision = "fp32";
        } else if (int8_ && ((qdq_ && in0 && dequantized_.count(in0->name())) || (scaled(in0) && scaled(out0)))) {
          precision = "int8";
        } else {
          precision = wide;
        }
        out_precision = precision;
        // Explicit quantization: an int8 layer writes int8 only where a QuantizeLinear takes its output.
        if (precision == "int8" && qdq_ && !(out0 && consumed_by_q[out0->name()] == consumers[out0->name()] &&
                                             consumers[out0->name()] > 0)) {
          out_precision = wide;
        }
      } else {
        const std::string in = precision_of(in0);
        precision = !fallback_ && in == "int8" && (qdq_ || scaled(out0)) ? "int8" : wide;
        out_precision = precision;
      }
      for (TensorDouble* t : g.outputs()) tensor_precision_[t->name()] = out_precision;
      if (engine_layer) add_layer(g, precision, out_precision);
#if TRT_DOUBLE_PROGRESS
      if (monitor && !monitor->stepComplete(kLayerPhase, step)) cancelled();
#endif
      ++step;
    }
#if TRT_DOUBLE_PROGRESS
    if (monitor) monitor->phaseFinish(kLayerPhase);
#endif
    // Outputs leave in their declared type: a reformat where the last layer computed another precision.
    int k = 0;
    for (TensorDouble* t : net_.outputs()) {
      const std::string p = precision_of(t);
      if (p != "fp32") {
        PlanLayer r;
        r.name = "Reformatting CopyNode for Output Tensor " + std::to_string(k) + " to " + t->name();
        r.layer_type = r.parameter_type = "Reformat";
        r.precision = p;
        r.inputs.push_back(PlanTensor{"Reformatted Output Tensor " + std::to_string(k) + " to " + t->name(),
                                      batched(t->dims()), p});
        r.outputs.push_back(PlanTensor{t->name(), batched(t->dims()), "fp32"});
        plan_.layers.push_back(r);
      }
      ++k;
    }
  }

  // A layer, after a reformat of each input whose precision is not the layer's (TensorRT inserts those).
  void add_layer(const Group& g, const std::string& precision, const std::string& out_precision) {
    PlanLayer layer;
    layer.name = g.name();
    inspector_names(g.layer->op(), &layer.layer_type, &layer.parameter_type);
    layer.precision = precision;
    int k = 0;
    for (TensorDouble* t : g.layer->inputs()) {
      if (!t || net_.weights().count(t->name()) || is_weight(t)) continue;  // weights are not layer inputs
      const std::string have = precision_of(t);
      std::string name = t->name();
      if (have != precision) {
        PlanLayer r;
        r.name = "Reformatting CopyNode for Input Tensor " + std::to_string(k) + " to " + layer.name;
        r.layer_type = r.parameter_type = "Reformat";
        r.precision = precision;
        name = "Reformatted Input Tensor " + std::to_string(k) + " to " + layer.name;
        r.inputs.push_back(PlanTensor{t->name(), batched(t->dims()), have});
        r.outputs.push_back(PlanTensor{name, batched(t->dims()), precision});
        plan_.layers.push_back(r);
      }
      layer.inputs.push_back(PlanTensor{name, batched(t->dims()), precision});
      ++k;
    }
    for (TensorDouble* t : g.outputs()) layer.outputs.push_back(PlanTensor{t->name(), batched(t->dims()), out_precision});
    plan_.layers.push_back(layer);
    // The weights this layer reads, directly or through a DequantizeLinear, are stored at its precision.
    for (TensorDouble* t : g.layer->inputs()) {
      if (!t) continue;
      if (net_.weights().count(t->name())) weight_precision_[t->name()] = precision;
      auto dq = weight_of_dq_.find(t->name());
      if (dq != weight_of_dq_.end()) weight_precision_[dq->second] = precision;
    }
    if (is_compute(g.layer->op())) compute_layers_.push_back(layer.name + "|" + shape_string(batched(
                                                                 g.outputs().empty() ? std::vector<int64_t>()
                                                                                     : g.outputs()[0]->dims())) +
                                                             "|" + precision);
  }

  // A tensor that only carries weights: the output of a Constant or of a DequantizeLinear of an initializer.
  bool is_weight(const TensorDouble* t) {
    if (!weights_indexed_) index_weights();
    return weight_of_dq_.count(t->name()) != 0 || constants_.count(t->name()) != 0;
  }

  void index_weights() {
    weights_indexed_ = true;
    for (const auto& l : net_.layers()) {
      if (l->op() == "Constant") {
        for (TensorDouble* t : l->outputs()) constants_.insert(t->name());
      }
      if ((l->op() == "DequantizeLinear" || l->op() == "QuantizeLinear") && !l->inputs().empty() && l->inputs()[0] &&
          net_.weights().count(l->inputs()[0]->name())) {
        for (TensorDouble* t : l->outputs()) weight_of_dq_[t->name()] = l->inputs()[0]->name();
      }
    }
    // A weight quantized then dequantized (Q -> DQ on an initializer) is still that weight.
    for (const auto& l : net_.layers()) {
      if (l->op() != "DequantizeLinear" || l->inputs().empty() || !l->inputs()[0]) continue;
      auto q = weight_of_dq_.find(l->inputs()[0]->name());
      if (q == weight_of_dq_.end()) continue;
      for (TensorDouble* t : l->outputs()) weight_of_dq_[t->name()] = q->second;
    }
  }

  std::vector<int64_t> batched(std::vector<int64_t> dims) const {
    if (!dims.empty() && dims[0] < 0) dims[0] = plan_.batch;
    return dims;
  }

  void timing_cache() {
    TimingCacheDouble* cache = cfg_.timing_cache();
    if (!cache) return;
    int reused = 0;
    for (const std::string& key : compute_layers_) reused += cache->record(key) ? 1 : 0;
    log(logger_, Severity::kINFO, "timing cache: " + std::to_string(reused) + " of " +
                                      std::to_string(compute_layers_.size()) + " layer timings reused");
  }

  // TensorRT 8.6+ compiles whole subgraphs with Myelin, and the inspector then shows one layer whose tensors
  // are the subgraph's boundary, telling no precision of the layers inside (MLMARK_TRT_DOUBLE_MYELIN=1).
  void myelin() {
    PlanLayer m;
    m.name = "{ForeignNode[" + (plan_.layers.empty() ? std::string() : plan_.layers.front().name) + "..." +
             (plan_.layers.empty() ? std::string() : plan_.layers.back().name) + "]}";
    m.layer_type = "Myelin";
    m.precision = "fp32";
    for (const PlanIO& io : plan_.io) {
      (io.is_input ? m.inputs : m.outputs).push_back(PlanTensor{io.name, batched(io.dims), "fp32"});
    }
    plan_.layers.assign(1, m);
    plan_.flags |= kPlanMyelin;
  }

  uint64_t weight_bytes() const {
    uint64_t total = 0;
    for (const auto& w : net_.weights()) {
      auto p = weight_precision_.find(w.first);
      if (p == weight_precision_.end()) continue;  // scales, zero points, shapes: not stored as weights
      total += static_cast<uint64_t>(w.second) * static_cast<uint64_t>(precision_bytes(p->second));
    }
    return total / kWeightScale;
  }

  std::string summary() const {
    std::map<std::string, int> counts;
    for (const PlanLayer& l : plan_.layers) {
      if (l.layer_type.find("Cask") == 0) ++counts[l.precision];
    }
    std::string s = "compute layers:";
    for (const auto& c : counts) s += " " + std::to_string(c.second) + " " + c.first;
    if (counts.empty()) s += " none";
    if (plan_.flags & kPlanMyelin) s += " (shown as one Myelin layer)";
    return s;
  }

  NetworkDouble& net_;
  BuilderConfigDouble& cfg_;
  nvinfer1::ILogger* logger_;
  Plan plan_;
  bool fp16_ = false;
  bool int8_ = false;
  bool qdq_ = false;
  bool fallback_ = false;
  std::map<std::string, std::string> scales_;
  std::map<std::string, std::string> tensor_precision_;
  std::set<std::string> dequantized_;
  std::map<std::string, std::string> weight_precision_;  // initializer -> precision it is stored at
  std::map<std::string, std::string> weight_of_dq_;      // Q/DQ output -> the initializer it carries
  std::set<std::string> constants_;
  bool weights_indexed_ = false;
  std::vector<std::string> compute_layers_;  // timing cache keys
};

}  // namespace

// ---------------------------------------------------------------------------------------------- network

TensorDouble::TensorDouble(const std::string& name, DataType type, const std::vector<int64_t>& dims, bool known)
    : name_(name), type_(type), dims_(dims), known_(known) {
  mImpl = this;
}

nvinfer1::Dims TensorDouble::getDimensions() const noexcept { return to_dims(dims_); }

void TensorDouble::setDimensions(DimsArg dims) noexcept {
  const std::vector<int64_t> d = to_vector(dims);
  if (known_ && d.size() != dims_.size()) {
    log(logger_, Severity::kERROR, "Error Code 3: API Usage Error (setDimensions: " + name_ + " has rank " +
                                       std::to_string(dims_.size()) + ", not " + std::to_string(d.size()) + ")");
    return;
  }
  dims_ = d;
  known_ = true;
}

LayerDouble::LayerDouble(const std::string& name, const std::string& op, LayerType type)
    : name_(name), op_(op), type_(type) {
  mLayer = this;
}

nvinfer1::ITensor* LayerDouble::getInput(int32_t index) const noexcept {
  return index >= 0 && index < getNbInputs() ? inputs_[static_cast<std::size_t>(index)] : nullptr;
}

nvinfer1::ITensor* LayerDouble::getOutput(int32_t index) const noexcept {
  return index >= 0 && index < getNbOutputs() ? outputs_[static_cast<std::size_t>(index)] : nullptr;
}

NetworkDouble::NetworkDouble(BuilderDouble* builder, nvinfer1::NetworkDefinitionCreationFlags flags)
    : builder_(builder), flags_(flags) {
  mImpl = this;
}

bool NetworkDouble::explicit_batch() const {
#if TRT_DOUBLE_AT_LEAST(10, 0)
  return true;  // the only kind from 10.0 on
#else
  return (flags_ & (1U << static_cast<uint32_t>(nvinfer1::NetworkDefinitionCreationFlag::kEXPLICIT_BATCH))) != 0;
#endif
}

nvinfer1::ILogger* NetworkDouble::logger() const { return builder_->getLogger(); }

nvinfer1::ILayer* NetworkDouble::getLayer(int32_t index) const noexcept {
  return index >= 0 && index < getNbLayers() ? layers_[static_cast<std::size_t>(index)].get() : nullptr;
}

nvinfer1::ITensor* NetworkDouble::getInput(int32_t index) const noexcept {
  return index >= 0 && index < getNbInputs() ? inputs_[static_cast<std::size_t>(index)] : nullptr;
}

nvinfer1::ITensor* NetworkDouble::getOutput(int32_t index) const noexcept {
  return index >= 0 && index < getNbOutputs() ? outputs_[static_cast<std::size_t>(index)] : nullptr;
}

TensorDouble* NetworkDouble::add_tensor(const std::string& name, DataType type, const std::vector<int64_t>& dims,
                                        bool known) {
  tensors_.push_back(std::unique_ptr<TensorDouble>(new TensorDouble(name, type, dims, known)));
  tensors_.back()->set_logger(logger());
  by_name_[name] = tensors_.back().get();
  return tensors_.back().get();
}

TensorDouble* NetworkDouble::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

LayerDouble* NetworkDouble::add_layer(const std::string& name, const std::string& op, LayerType type) {
  layers_.push_back(std::unique_ptr<LayerDouble>(new LayerDouble(name, op, type)));
  return layers_.back().get();
}

// ---------------------------------------------------------------------------------------------- builder

bool ProfileDouble::setDimensions(char const* name, nvinfer1::OptProfileSelector select, DimsArg dims) noexcept {
  if (!name) return false;
  std::vector<std::vector<int64_t>>& s = shapes_[name];
  s.resize(3);
  s[static_cast<std::size_t>(select)] = to_vector(dims);
  return true;
}

nvinfer1::Dims ProfileDouble::getDimensions(char const* name, nvinfer1::OptProfileSelector select) const noexcept {
  auto it = shapes_.find(name ? name : "");
  if (it == shapes_.end()) return to_dims({});
  return to_dims(it->second[static_cast<std::size_t>(select)]);
}

bool ProfileDouble::isValid() const noexcept {
  for (const auto& s : shapes_) {
    for (const std::vector<int64_t>& shape : s.second) {
      if (shape.empty() || shape.size() != s.second[0].size()) return false;
    }
  }
  return !shapes_.empty();
}

std::vector<std::vector<int64_t>> ProfileDouble::shapes(const std::string& name) const {
  auto it = shapes_.find(name);
  if (it == shapes_.end()) return {};
  for (const std::vector<int64_t>& s : it->second) {
    if (s.empty()) return {};
  }
  return it->second;
}

namespace {
const char kTimingMagic[] = "MLMark TensorRT test double timing cache (not TensorRT) ";
}  // namespace

nvinfer1::IHostMemory* TimingCacheDouble::serialize() const noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string text = kTimingMagic + std::to_string(release_number()) + "\n";
  for (const std::string& k : keys_) text += k + "\n";
  return new HostMemoryDouble(text);
}

bool TimingCacheDouble::load(const void* blob, std::size_t size) {
  const std::string text(static_cast<const char*>(blob), size);
  const std::string header = kTimingMagic + std::to_string(release_number()) + "\n";
  if (text.compare(0, header.size(), header) != 0) return false;
  std::istringstream in(text.substr(header.size()));
  std::string line;
  std::lock_guard<std::mutex> lock(mutex_);
  while (std::getline(in, line)) {
    if (!line.empty()) keys_.insert(line);
  }
  return true;
}

bool TimingCacheDouble::record(const std::string& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  return !keys_.insert(key).second;
}

#if TRT_DOUBLE_AT_LEAST(8, 4)
void BuilderConfigDouble::setMemoryPoolLimit(nvinfer1::MemoryPoolType pool, std::size_t size) noexcept {
  if (pool == nvinfer1::MemoryPoolType::kWORKSPACE) workspace_ = size;
}
#endif

#if TRT_DOUBLE_CALIBRATORS
bool BuilderConfigDouble::setCalibrationProfile(nvinfer1::IOptimizationProfile const* profile) noexcept {
  const ProfileDouble* p = dynamic_cast<const ProfileDouble*>(profile);
  if (profile && (!p || !p->isValid())) {
    log(logger_, Severity::kERROR, "Error Code 3: API Usage Error (setCalibrationProfile: the profile is not valid)");
    return false;
  }
  calibration_profile_ = p;
  return true;
}
#endif

nvinfer1::ITimingCache* BuilderConfigDouble::createTimingCache(void const* blob, std::size_t size) const noexcept {
  std::unique_ptr<TimingCacheDouble> cache(new TimingCacheDouble());
  if (blob && size && !cache->load(blob, size)) {
    log(logger_, Severity::kERROR,
        "Error Code 3: API Usage Error (the timing cache was written by another release or is not a timing cache)");
    return nullptr;
  }
  return cache.release();
}

bool BuilderConfigDouble::setTimingCache(nvinfer1::ITimingCache const& cache, bool ignore_mismatch) noexcept {
  (void)ignore_mismatch;
  // The config only points at the cache, as TensorRT's does; builds add their timings to it.
  cache_ = const_cast<TimingCacheDouble*>(dynamic_cast<const TimingCacheDouble*>(&cache));
  return cache_ != nullptr;
}

int32_t BuilderConfigDouble::addOptimizationProfile(nvinfer1::IOptimizationProfile const* profile) noexcept {
  const ProfileDouble* p = dynamic_cast<const ProfileDouble*>(profile);
  if (!p || !p->isValid()) {
    log(logger_, Severity::kERROR, "Error Code 3: API Usage Error (addOptimizationProfile: the profile is not valid)");
    return -1;
  }
  profiles_.push_back(p);
  return static_cast<int32_t>(profiles_.size()) - 1;
}

BuilderDouble::BuilderDouble(nvinfer1::ILogger* logger) : logger_(logger) {
  mImpl = this;
  ++counters().builders;
  // As TensorRT's builder does, it makes the GPU current and asks what it runs fast: a builder always means
  // a CUDA context in this process.
  int device = 0;
  cudaDeviceProp prop;
  if (cudaGetDevice(&device) == cudaSuccess && cudaFree(nullptr) == cudaSuccess &&
      cudaGetDeviceProperties(&prop, device) == cudaSuccess) {
    const int cc = prop.major * 10 + prop.minor;
    fast_fp16_ = cc == 53 || cc == 60 || cc == 62 || cc >= 70;
    fast_int8_ = cc == 61 || cc >= 70;
  }
  cudaGetLastError();
  log(logger_, Severity::kINFO, "builder created in process " + std::to_string(static_cast<long>(getpid())));
}

BuilderDouble::~BuilderDouble() = default;

nvinfer1::IBuilderConfig* BuilderDouble::createBuilderConfig() noexcept { return new BuilderConfigDouble(logger_); }

nvinfer1::INetworkDefinition* BuilderDouble::createNetworkV2(nvinfer1::NetworkDefinitionCreationFlags flags) noexcept {
  return new NetworkDouble(this, flags);
}

nvinfer1::IOptimizationProfile* BuilderDouble::createOptimizationProfile() noexcept {
  profiles_.push_back(std::unique_ptr<ProfileDouble>(new ProfileDouble()));
  return profiles_.back().get();
}

nvinfer1::IHostMemory* BuilderDouble::buildSerializedNetwork(nvinfer1::INetworkDefinition& network,
                                                             nvinfer1::IBuilderConfig& config) noexcept {
  ++counters().builds;
  NetworkDouble* net = dynamic_cast<NetworkDouble*>(&network);
  BuilderConfigDouble* cfg = dynamic_cast<BuilderConfigDouble*>(&config);
  if (!net || !cfg) {
    log(logger_, Severity::kERROR, "Error Code 3: API Usage Error (the network or config was not made by this builder)");
    return nullptr;
  }
  try {
    return new HostMemoryDouble(Build(*net, *cfg, logger_).run());
  } catch (const BuildError&) {
    return nullptr;  // TensorRT's logger was told why
  } catch (const std::exception& e) {
    log(logger_, Severity::kINTERNAL_ERROR, std::string("the build failed: ") + e.what());
    return nullptr;
  }
}

// ---------------------------------------------------------------------------------------------- parser

bool ParserDouble::fail(nvonnxparser::ErrorCode code, const std::string& desc, int node, const std::string& name,
                        const std::string& op) {
  errors_.push_back(std::unique_ptr<ParserErrorDouble>(new ParserErrorDouble(code, desc, node, name, op)));
  return false;
}

nvonnxparser::IParserError const* ParserDouble::getError(int index) const TRT_DOUBLE_PARSER_NOEXCEPT {
  return index >= 0 && index < getNbErrors() ? errors_[static_cast<std::size_t>(index)].get() : nullptr;
}

bool ParserDouble::parseFromFile(char const* path, int verbosity) TRT_DOUBLE_PARSER_NOEXCEPT {
  (void)verbosity;
  try {
    if (!network_->explicit_batch()) {
      return fail(nvonnxparser::ErrorCode::kINVALID_GRAPH,
                  "This version of the ONNX parser only supports TensorRT INetworkDefinitions with an explicit batch "
                  "dimension. Please ensure the network was initialized with the kEXPLICIT_BATCH flag.");
    }
    std::ifstream in(path ? path : "", std::ios::binary);
    if (!in) return fail(nvonnxparser::ErrorCode::kMODEL_DESERIALIZE_FAILED, std::string("cannot open ") + (path ? path : ""));
    std::ostringstream buffer;
    buffer << in.rdbuf();
    OnnxModel model;
    std::string why;
    if (!read_onnx(buffer.str(), &model, &why)) {
      return fail(nvonnxparser::ErrorCode::kMODEL_DESERIALIZE_FAILED,
                  std::string("Failed to parse ONNX model from file: ") + path + ": " + why);
    }
    auto opset = model.opsets.find("");
    if (opset == model.opsets.end() || opset->second < 7) {
      return fail(nvonnxparser::ErrorCode::kUNSUPPORTED_GRAPH, "the model's default-domain opset is missing or below 7");
    }
    std::set<std::string> initializers;
    for (const OnnxInitializer& init : model.initializers) {
      initializers.insert(init.name);
      network_->add_tensor(init.name, data_type_of(init.elem_type), init.dims, true);
      network_->weights()[init.name] = init.count;
    }
    for (const OnnxValue& v : model.inputs) {
      if (initializers.count(v.name)) continue;  // old models list initializers among the inputs
      network_->add_input(network_->add_tensor(v.name, data_type_of(v.elem_type), v.dims, v.has_shape));
    }
    std::map<std::string, const OnnxValue*> declared;
    for (const OnnxValue& v : model.value_info) declared[v.name] = &v;
    for (const OnnxValue& v : model.outputs) declared[v.name] = &v;
    for (std::size_t i = 0; i < model.nodes.size(); ++i) {
      const OnnxNode& n = model.nodes[i];
      const std::string name = n.name.empty() ? n.op_type + "_" + std::to_string(i) : n.name;
      if (!n.domain.empty() && n.domain != "ai.onnx") {
        return fail(nvonnxparser::ErrorCode::kUNSUPPORTED_NODE, "No importer registered for op: " + n.op_type,
                    static_cast<int>(i), name, n.op_type);
      }
      LayerDouble* layer = network_->add_layer(name, n.op_type, layer_type_of(n.op_type));
      DataType type = DataType::kFLOAT;
      bool first = true;
      for (const std::string& input : n.inputs) {
        if (input.empty()) {
          layer->inputs().push_back(nullptr);
          continue;
        }
        TensorDouble* t = network_->find(input);
        if (!t) {
          return fail(nvonnxparser::ErrorCode::kINVALID_GRAPH,
                      "input '" + input + "' of node " + name + " is not a graph input, an initializer or a node output",
                      static_cast<int>(i), name, n.op_type);
        }
        if (first) type = t->getType();
        first = false;
        layer->inputs().push_back(t);
      }
      // What the double needs of types: enough to tell float16 tensors and Q/DQ layers apart.
      if (n.op_type == "Cast" && n.to > 0) type = data_type_of(static_cast<int32_t>(n.to));
      if (n.op_type == "QuantizeLinear") type = DataType::kINT8;
      if (n.op_type == "DequantizeLinear") type = DataType::kFLOAT;
      if (n.op_type == "Shape") type = data_type_of(kOnnxInt64);
      for (const std::string& output : n.outputs) {
        auto d = declared.find(output);
        TensorDouble* t = d != declared.end()
                              ? network_->add_tensor(output, type, d->second->dims, d->second->has_shape)
                              : network_->add_tensor(output, type, {}, false);
        layer->outputs().push_back(t);
      }
    }
    for (const OnnxValue& v : model.outputs) {
      TensorDouble* t = network_->find(v.name);
      if (!t) return fail(nvonnxparser::ErrorCode::kINVALID_GRAPH, "graph output '" + v.name + "' is not produced");
      t->set_type(data_type_of(v.elem_type));
      if (v.has_shape) t->set_dims(v.dims);
      network_->add_output(t);
    }
    log(logger_, Severity::kINFO, std::string("parsed ") + path + ": " + std::to_string(model.nodes.size()) +
                                      " nodes, " + std::to_string(network_->getNbInputs()) + " input(s), " +
                                      std::to_string(network_->getNbOutputs()) +
                                      " output(s) (names, types and shapes only)");
    return true;
  } catch (const std::exception& e) {
    return fail(nvonnxparser::ErrorCode::kINTERNAL_ERROR, e.what());
  }
}

}  // namespace trt_double
