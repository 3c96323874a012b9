// The test double's run side: deserialization, the engine's tensors and profile, execution contexts whose
// enqueue launches the double's kernel (kernel.h), and the engine inspector's JSON.
#include <unistd.h>

#include <cstdio>
#include <sstream>

#include "double.h"
#include "kernel.h"

namespace trt_double {
namespace {

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string json_dims(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? "," : "") + std::to_string(dims[i]);
  return s + "]";
}

// How the inspector names a tensor's format: briefly without an execution context, in full with one (the
// long names are those TensorRT's inspector prints for these formats).
std::string format_name(const std::string& precision, bool with_context) {
  if (precision == "int8") return with_context ? "Thirty-two wide channel vectorized row major Int8 format" : "Int8";
  if (precision == "fp16") return with_context ? "Channel major FP16 format where channel % 8 == 0" : "Half";
  return with_context ? "Row major linear FP32" : "Float";
}

}  // namespace

// ---------------------------------------------------------------------------------------------- engine

EngineDouble::EngineDouble(const Plan& plan, nvinfer1::ILogger* logger) : plan_(plan), logger_(logger) {
  mImpl = this;
  ++counters().engines;
}

EngineDouble::~EngineDouble() = default;

int EngineDouble::index_of(char const* name) const {
  if (!name) return -1;
  for (std::size_t i = 0; i < plan_.io.size(); ++i) {
    if (plan_.io[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

nvinfer1::Dims EngineDouble::dims_of(int index, const std::vector<int64_t>& dims) const {
  if (index < 0) {
    nvinfer1::Dims invalid = to_dims({});
    invalid.nbDims = -1;  // what TensorRT returns for a name it does not know
    return invalid;
  }
  return to_dims(dims);
}

#if TRT_DOUBLE_IO_TENSORS
char const* EngineDouble::getIOTensorName(int32_t index) const noexcept {
  return index >= 0 && index < getNbIOTensors() ? plan_.io[static_cast<std::size_t>(index)].name.c_str() : nullptr;
}

nvinfer1::TensorIOMode EngineDouble::getTensorIOMode(char const* name) const noexcept {
  const int i = index_of(name);
  if (i < 0) return nvinfer1::TensorIOMode::kNONE;
  return plan_.io[static_cast<std::size_t>(i)].is_input ? nvinfer1::TensorIOMode::kINPUT
                                                        : nvinfer1::TensorIOMode::kOUTPUT;
}

nvinfer1::DataType EngineDouble::getTensorDataType(char const* name) const noexcept {
  const int i = index_of(name);
  return static_cast<nvinfer1::DataType>(i < 0 ? 0 : plan_.io[static_cast<std::size_t>(i)].dtype);
}

nvinfer1::Dims EngineDouble::getTensorShape(char const* name) const noexcept {
  const int i = index_of(name);
  return dims_of(i, i < 0 ? std::vector<int64_t>() : plan_.io[static_cast<std::size_t>(i)].dims);
}

nvinfer1::Dims EngineDouble::getProfileShape(char const* name, int32_t profile,
                                             nvinfer1::OptProfileSelector select) const noexcept {
  const int i = index_of(name);
  if (i < 0 || profile != 0 || !plan_.io[static_cast<std::size_t>(i)].is_input) {
    log(logger_, Severity::kERROR, std::string("Error Code 3: API Usage Error (getProfileShape: ") +
                                       (name ? name : "null") + " is not an input of profile " +
                                       std::to_string(profile) + ")");
    return dims_of(-1, {});
  }
  const PlanIO& io = plan_.io[static_cast<std::size_t>(i)];
  if (io.opt.empty()) return to_dims(io.dims);  // a fixed input: the profile is its shape
  const std::vector<int64_t>& s = select == nvinfer1::OptProfileSelector::kMIN
                                      ? io.min
                                      : (select == nvinfer1::OptProfileSelector::kOPT ? io.opt : io.max);
  return to_dims(s);
}
#else
char const* EngineDouble::getBindingName(int32_t index) const noexcept {
  return index >= 0 && index < getNbBindings() ? plan_.io[static_cast<std::size_t>(index)].name.c_str() : nullptr;
}

bool EngineDouble::bindingIsInput(int32_t index) const noexcept {
  return index >= 0 && index < getNbBindings() && plan_.io[static_cast<std::size_t>(index)].is_input;
}

nvinfer1::DataType EngineDouble::getBindingDataType(int32_t index) const noexcept {
  return static_cast<nvinfer1::DataType>(index >= 0 && index < getNbBindings()
                                             ? plan_.io[static_cast<std::size_t>(index)].dtype
                                             : 0);
}

nvinfer1::Dims EngineDouble::getBindingDimensions(int32_t index) const noexcept {
  const bool ok = index >= 0 && index < getNbBindings();
  return dims_of(ok ? index : -1, ok ? plan_.io[static_cast<std::size_t>(index)].dims : std::vector<int64_t>());
}

nvinfer1::Dims EngineDouble::getProfileDimensions(int32_t index, int32_t profile,
                                                  nvinfer1::OptProfileSelector select) const noexcept {
  if (index < 0 || index >= getNbBindings() || profile != 0) return dims_of(-1, {});
  const PlanIO& io = plan_.io[static_cast<std::size_t>(index)];
  if (io.opt.empty()) return to_dims(io.dims);
  return to_dims(select == nvinfer1::OptProfileSelector::kMIN ? io.min
                                                              : (select == nvinfer1::OptProfileSelector::kOPT ? io.opt
                                                                                                             : io.max));
}
#endif

#if TRT_DOUBLE_AT_LEAST(10, 1)
nvinfer1::IExecutionContext* EngineDouble::createExecutionContext(
    nvinfer1::ExecutionContextAllocationStrategy strategy) noexcept {
  if (strategy != nvinfer1::ExecutionContextAllocationStrategy::kSTATIC) {
    log(logger_, Severity::kERROR, "Error Code 3: API Usage Error (the test double allocates context memory statically)");
    return nullptr;
  }
  return create_context();
}
#else
nvinfer1::IExecutionContext* EngineDouble::createExecutionContext() noexcept { return create_context(); }
#endif

nvinfer1::IExecutionContext* EngineDouble::create_context() {
  // MLMARK_TRT_DOUBLE_CONTEXT_FAIL: contexts cannot be made, for lack of memory ("oom") or otherwise ("error").
  const std::string fail = env("MLMARK_TRT_DOUBLE_CONTEXT_FAIL");
  if (fail == "oom" || fail == "error") {
    log(logger_, Severity::kERROR, fail == "oom" ? "Error Code 2: OutOfMemory (the test double fails this context's "
                                                   "allocation as MLMARK_TRT_DOUBLE_CONTEXT_FAIL=oom asks)"
                                                 : "Error Code 9: Internal Error (the test double fails this context as "
                                                   "MLMARK_TRT_DOUBLE_CONTEXT_FAIL=error asks)");
    return nullptr;
  }
  // A context owns its activation memory (getDeviceMemorySize), as TensorRT's do by default.
  void* memory = nullptr;
  const cudaError_t err = cudaMalloc(&memory, static_cast<std::size_t>(plan_.device_memory));
  if (err != cudaSuccess) {
    cudaGetLastError();
    log(logger_, Severity::kERROR, std::string("Error Code 2: OutOfMemory (allocating ") +
                                       std::to_string(plan_.device_memory) + " bytes of context memory: " +
                                       cudaGetErrorString(err) + ")");
    return nullptr;
  }
  ContextDouble* context = new ContextDouble(this, memory);
  if (claim_profile(context, true)) context->set_profile(0);
  return context;
}

bool EngineDouble::claim_profile(const ContextDouble* context, bool implicit) {
  std::lock_guard<std::mutex> lock(mutex_);
#if TRT_DOUBLE_AT_LEAST(9, 0)
  (void)implicit;  // from 9.0 every context starts with profile 0, and contexts share it
  profile_holders_.insert(context);
  return true;
#else
  if (profile_holders_.count(context)) return true;
  // Before 9.0 only a context made while no other holds profile 0 gets it implicitly.
  if (implicit && !profile_holders_.empty()) return false;
#if !TRT_DOUBLE_AT_LEAST(8, 6)
  // Before 8.6 each context must use a profile no other live context uses.
  if (!profile_holders_.empty()) return false;
#endif
  profile_holders_.insert(context);
  return true;
#endif
}

void EngineDouble::release_profile(const ContextDouble* context) {
  std::lock_guard<std::mutex> lock(mutex_);
  profile_holders_.erase(context);
}

nvinfer1::IEngineInspector* EngineDouble::createEngineInspector() const noexcept { return new InspectorDouble(this); }

// ---------------------------------------------------------------------------------------------- context

ContextDouble::ContextDouble(EngineDouble* engine, void* device_memory)
    : engine_(engine), device_memory_(device_memory) {
  mImpl = this;
  ++counters().contexts;
  ++counters().contexts_alive;
  for (const PlanIO& io : engine_->plan().io) shapes_.push_back(io.dims);
  addresses_.assign(engine_->plan().io.size(), nullptr);
  refuse_capture_ = env("MLMARK_TRT_DOUBLE_CAPTURE") == "refuse";
}

ContextDouble::~ContextDouble() {
  engine_->release_profile(this);
  if (device_memory_ && cudaFree(device_memory_) != cudaSuccess) cudaGetLastError();
  --counters().contexts_alive;
}

bool ContextDouble::error(const std::string& message) const {
  log(engine_->logger(), Severity::kERROR, message);
  return false;
}

bool ContextDouble::setOptimizationProfileAsync(int32_t index, cudaStream_t stream) noexcept {
  (void)stream;
  if (index != 0) {
    return error("Error Code 3: API Usage Error (profile index " + std::to_string(index) +
                 " is out of range: the engine has 1 optimization profile)");
  }
  if (!engine_->claim_profile(this, false)) {
    return error("Error Code 3: API Usage Error (optimization profile 0 is used by another execution context; "
                 "before TensorRT 8.6 each context needs a profile of its own)");
  }
  profile_ = 0;
  return true;
}

bool ContextDouble::allInputDimensionsSpecified() const noexcept {
  const Plan& plan = engine_->plan();
  for (std::size_t i = 0; i < plan.io.size(); ++i) {
    if (!plan.io[i].is_input) continue;
    for (int64_t d : shapes_[i]) {
      if (d < 0) return false;
    }
  }
  return true;
}

bool ContextDouble::set_shape(int index, const std::vector<int64_t>& dims) {
  const Plan& plan = engine_->plan();
  if (index < 0 || !plan.io[static_cast<std::size_t>(index)].is_input) {
    return error("Error Code 3: API Usage Error (setInputShape: not an input tensor)");
  }
  const PlanIO& io = plan.io[static_cast<std::size_t>(index)];
  const bool dynamic = !io.opt.empty();
  if (dynamic && profile_ < 0) {
    return error("Error Code 3: API Usage Error (" + io.name + ": select an optimization profile before setting shapes)");
  }
  if (dims.size() != io.dims.size()) {
    return error("Error Code 3: API Usage Error (" + io.name + " has rank " + std::to_string(io.dims.size()) +
                 ", not " + std::to_string(dims.size()) + ")");
  }
  for (std::size_t d = 0; d < dims.size(); ++d) {
    const bool fits = io.dims[d] >= 0 ? dims[d] == io.dims[d] : (dims[d] >= io.min[d] && dims[d] <= io.max[d]);
    if (!fits) {
      return error("Error Code 3: API Usage Error (" + io.name + ": shape " + shape_string(dims) +
                   " is outside optimization profile 0 " +
                   (dynamic ? shape_string(io.min) + ".." + shape_string(io.max) : shape_string(io.dims)) + ")");
    }
  }
  shapes_[static_cast<std::size_t>(index)] = dims;
  return true;
}

std::vector<int64_t> ContextDouble::shape_of(int index) const {
  const Plan& plan = engine_->plan();
  const PlanIO& io = plan.io[static_cast<std::size_t>(index)];
  if (io.is_input) return shapes_[static_cast<std::size_t>(index)];
  // Outputs: a dynamic batch follows the first input's batch once it is set.
  int64_t batch = -1;
  for (std::size_t i = 0; i < plan.io.size(); ++i) {
    if (plan.io[i].is_input && !shapes_[i].empty()) {
      batch = shapes_[i][0];
      break;
    }
  }
  std::vector<int64_t> dims = io.dims;
  if (!dims.empty() && dims[0] < 0) dims[0] = batch;
  return dims;
}

#if TRT_DOUBLE_IO_TENSORS
bool ContextDouble::setInputShape(char const* name, nvinfer1::Dims const& dims) noexcept {
  return set_shape(engine_->index_of(name), to_vector(dims));
}

nvinfer1::Dims ContextDouble::getTensorShape(char const* name) const noexcept {
  const int i = engine_->index_of(name);
  return engine_->dims_of(i, i < 0 ? std::vector<int64_t>() : shape_of(i));
}

bool ContextDouble::setTensorAddress(char const* name, void* data) noexcept {
  const int i = engine_->index_of(name);
  if (i < 0) {
    return error(std::string("Error Code 3: API Usage Error (setTensorAddress: ") + (name ? name : "null") +
                 " is not an input or output of the engine)");
  }
  addresses_[static_cast<std::size_t>(i)] = data;
  return true;
}

bool ContextDouble::enqueueV3(cudaStream_t stream) noexcept { return enqueue(addresses_, stream); }
#else
bool ContextDouble::setBindingDimensions(int32_t index, nvinfer1::Dims dims) noexcept {
  return set_shape(index < static_cast<int32_t>(shapes_.size()) ? index : -1, to_vector(dims));
}

nvinfer1::Dims ContextDouble::getBindingDimensions(int32_t index) const noexcept {
  const bool ok = index >= 0 && index < static_cast<int32_t>(shapes_.size());
  return engine_->dims_of(ok ? index : -1, ok ? shape_of(index) : std::vector<int64_t>());
}

bool ContextDouble::enqueueV2(void* const* bindings, cudaStream_t stream, cudaEvent_t* input_consumed) noexcept {
  if (!bindings) return error("Error Code 3: API Usage Error (enqueueV2: bindings is null)");
  if (input_consumed) return error("Error Code 3: API Usage Error (the test double does not signal inputConsumed)");
  return enqueue(std::vector<void*>(bindings, bindings + shapes_.size()), stream);
}
#endif

#if TRT_DOUBLE_AT_LEAST(8, 6)
bool ContextDouble::setNvtxVerbosity(nvinfer1::ProfilingVerbosity verbosity) noexcept {
  nvtx_ = verbosity;
  return true;
}
#endif

bool ContextDouble::enqueue(const std::vector<void*>& addresses, cudaStream_t stream) {
  const Plan& plan = engine_->plan();
  ++counters().enqueues;
  if ((plan.flags & kPlanProfile) && profile_ < 0) {
    return error("Error Code 3: API Usage Error (the engine has dynamic shapes and no optimization profile is selected)");
  }
  if (!allInputDimensionsSpecified()) {
    return error("Error Code 3: API Usage Error (not all input shapes are specified)");
  }
  for (std::size_t i = 0; i < plan.io.size(); ++i) {
    if (!addresses[i]) {
      return error("Error Code 3: API Usage Error (the address of tensor '" + plan.io[i].name + "' is not set)");
    }
  }
  if (refuse_capture_) {
    // MLMARK_TRT_DOUBLE_CAPTURE=refuse: this engine holds an operation a CUDA-graph capture does not permit, as
    // some TensorRT engines do; it is called, which invalidates the capture, and the enqueue fails.
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &status) == cudaSuccess && status == cudaStreamCaptureStatusActive) {
      cudaStreamSynchronize(stream);
      cudaGetLastError();
      return error("Error Code 1: Cuda Runtime (operation not permitted when stream is capturing)");
    }
    cudaGetLastError();
  }
  KernelOutput outputs[kMaxKernelOutputs];
  int n = 0;
  const void* input0 = nullptr;
  uint64_t input0_bytes = 0;
  for (std::size_t i = 0; i < plan.io.size(); ++i) {
    uint64_t count = 1;
    for (int64_t d : shape_of(static_cast<int>(i))) count *= static_cast<uint64_t>(d);
    if (plan.io[i].is_input) {
      if (!input0) {
        input0 = addresses[i];
        input0_bytes = count * static_cast<uint64_t>(element_bytes(plan.io[i].dtype));
      }
      continue;
    }
    if (n == kMaxKernelOutputs) return error("Error Code 9: Internal Error (the test double writes 16 outputs at most)");
    outputs[n].data = addresses[i];
    outputs[n].count = count;
    outputs[n].dtype = plan.io[i].dtype;
    ++n;
  }
  const int rc = launch_kernel(stream, input0, input0_bytes, outputs, n, plan.kernel_ns);
  if (rc != 0) {
    return error(std::string("Error Code 1: Cuda Runtime (") + cudaGetErrorString(static_cast<cudaError_t>(rc)) + ")");
  }
  return true;
}

// ---------------------------------------------------------------------------------------------- inspector

bool InspectorDouble::setExecutionContext(nvinfer1::IExecutionContext const* context) noexcept {
  if (context && &context->getEngine() != static_cast<const nvinfer1::ICudaEngine*>(engine_)) {
    log(engine_->logger(), Severity::kERROR, "Error Code 3: API Usage Error (the context belongs to another engine)");
    return false;
  }
  context_ = context;
  return true;
}

std::string InspectorDouble::layer_json(const PlanLayer& layer) const {
  const bool detailed = engine_->plan().verbosity == static_cast<int32_t>(nvinfer1::ProfilingVerbosity::kDETAILED);
  if (!detailed) return json_string(layer.name);
  const bool full = context_ != nullptr;
  std::ostringstream s;
  s << "{\n  \"Name\": " << json_string(layer.name) << ",\n  \"LayerType\": " << json_string(layer.layer_type);
  for (int side = 0; side < 2; ++side) {
    const std::vector<PlanTensor>& tensors = side == 0 ? layer.inputs : layer.outputs;
    s << ",\n  \"" << (side == 0 ? "Inputs" : "Outputs") << "\": [";
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      s << (i ? "," : "") << "\n  {\n    \"Name\": " << json_string(tensors[i].name)
        << ",\n    \"Location\": \"Device\",\n    \"Dimensions\": " << json_dims(tensors[i].dims)
        << ",\n    \"Format/Datatype\": " << json_string(format_name(tensors[i].precision, full)) << "\n  }";
    }
    s << "]";
  }
  if (!layer.parameter_type.empty()) s << ",\n  \"ParameterType\": " << json_string(layer.parameter_type);
  if (layer.layer_type == "Reformat") s << ",\n  \"Origin\": \"REFORMAT\"";
  if (layer.layer_type == "Myelin") {
    s << ",\n  \"TacticName\": \"mlmark_test_double\"";
  } else {
    s << ",\n  \"TacticValue\": \"0x0000000000000000\"";
  }
  s << "\n}";
  return s.str();
}

std::string InspectorDouble::layer_line(const PlanLayer& layer) const {
  std::string line = layer.name;
  if (engine_->plan().verbosity == static_cast<int32_t>(nvinfer1::ProfilingVerbosity::kDETAILED)) {
    line += ", LayerType: " + layer.layer_type + ", Precision: " + layer.precision;
  }
  return line;
}

#if TRT_DOUBLE_AT_LEAST(8, 6)
char const* InspectorDouble::getLayerInformation(int32_t index, nvinfer1::LayerInformationFormat format) const noexcept {
#else
char const* InspectorDouble::getLayerInformation(int32_t index, nvinfer1::LayerInformationFormat format) noexcept {
#endif
  const Plan& plan = engine_->plan();
  if (index < 0 || index >= static_cast<int32_t>(plan.layers.size())) {
    log(engine_->logger(), Severity::kERROR, "Error Code 3: API Usage Error (layer index out of range)");
    return nullptr;
  }
  if (plan.verbosity == static_cast<int32_t>(nvinfer1::ProfilingVerbosity::kNONE)) {
    text_.clear();
    return text_.c_str();
  }
  const PlanLayer& layer = plan.layers[static_cast<std::size_t>(index)];
  text_ = format == nvinfer1::LayerInformationFormat::kJSON ? layer_json(layer) : layer_line(layer);
  return text_.c_str();
}

#if TRT_DOUBLE_AT_LEAST(8, 6)
char const* InspectorDouble::getEngineInformation(nvinfer1::LayerInformationFormat format) const noexcept {
#else
char const* InspectorDouble::getEngineInformation(nvinfer1::LayerInformationFormat format) noexcept {
#endif
  const Plan& plan = engine_->plan();
  const bool none = plan.verbosity == static_cast<int32_t>(nvinfer1::ProfilingVerbosity::kNONE);
  std::ostringstream s;
  if (format == nvinfer1::LayerInformationFormat::kJSON) {
    s << "{\"Layers\": [";
    if (!none) {
      for (std::size_t i = 0; i < plan.layers.size(); ++i) s << (i ? "," : "") << layer_json(plan.layers[i]);
    }
    s << "],\n\"Bindings\": [";
    for (std::size_t i = 0; i < plan.io.size(); ++i) s << (i ? ", " : "") << json_string(plan.io[i].name);
    s << "]}\n";
  } else if (!none) {
    for (const PlanLayer& layer : plan.layers) s << layer_line(layer) << "\n";
  }
  text_ = s.str();
  return text_.c_str();
}

// ---------------------------------------------------------------------------------------------- runtime

RuntimeDouble::RuntimeDouble(nvinfer1::ILogger* logger) : logger_(logger) {
  mImpl = this;
  ++counters().runtimes;
  log(logger_, Severity::kINFO, "runtime created in process " + std::to_string(static_cast<long>(getpid())));
}

RuntimeDouble::~RuntimeDouble() = default;

#if TRT_DOUBLE_AT_LEAST(10, 0)
nvinfer1::ICudaEngine* RuntimeDouble::deserializeCudaEngine(void const* blob, std::size_t size) noexcept {
#else
nvinfer1::ICudaEngine* RuntimeDouble::deserializeCudaEngine(void const* blob, std::size_t size,
                                                            nvinfer1::IPluginFactory* factory) noexcept {
  (void)factory;
#endif
  Plan plan;
  std::string why;
  if (!deserialize(blob, size, &plan, &why)) {
    log(logger_, Severity::kERROR, "Error Code 1: Serialization (" + why + ")");
    return nullptr;
  }
  if (plan.release != release_number()) {
    log(logger_, Severity::kERROR,
        "Error Code 6: API Usage Error (The engine plan file is not compatible with this version of TensorRT, "
        "expecting library version " + std::to_string(release_number()) + " got " + std::to_string(plan.release) +
            ", please rebuild.)");
    return nullptr;
  }
  return new EngineDouble(plan, logger_);
}

}  // namespace trt_double
