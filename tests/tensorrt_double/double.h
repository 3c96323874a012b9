// The TensorRT test double's classes. Each derives from the TensorRT class the application sees (IBuilder,
// ICudaEngine, ...) and from the generated stub of its implementation interface (apiv::VBuilder, ...), and
// points the public class at itself (mImpl = this), as TensorRT's own objects do. Only what MLMark's
// backend calls is overridden; every other method stops the process naming itself (stubs.h).
#ifndef TRT_DOUBLE_DOUBLE_H
#define TRT_DOUBLE_DOUBLE_H

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "common.h"
#include "plan.h"
#include "stubs.h"

namespace trt_double {

// Dims as the release passes them to setDimensions-like methods: by value before 10, by reference from 10.
#if TRT_DOUBLE_DIMS64
using DimsArg = nvinfer1::Dims const&;
#else
using DimsArg = nvinfer1::Dims;
#endif

// ---------------------------------------------------------------------------------------------- network

class TensorDouble : public nvinfer1::ITensor, public nvinfer_stubs::VTensorStub {
 public:
  TensorDouble(const std::string& name, nvinfer1::DataType type, const std::vector<int64_t>& dims, bool known);

  char const* getName() const noexcept override { return name_.c_str(); }
  void setName(char const* name) noexcept override { name_ = name ? name : ""; }
  nvinfer1::Dims getDimensions() const noexcept override;
  void setDimensions(DimsArg dims) noexcept override;
  nvinfer1::DataType getType() const noexcept override { return type_; }
  bool isNetworkInput() const noexcept override { return input_; }
  bool isNetworkOutput() const noexcept override { return output_; }
  bool isShapeTensor() const noexcept override { return false; }

  const std::string& name() const { return name_; }
  const std::vector<int64_t>& dims() const { return dims_; }
  bool known() const { return known_; }
  void set_type(nvinfer1::DataType type) { type_ = type; }
  void set_dims(const std::vector<int64_t>& dims) {
    dims_ = dims;
    known_ = true;
  }
  void mark_input() { input_ = true; }
  void mark_output() { output_ = true; }
  void set_logger(nvinfer1::ILogger* logger) { logger_ = logger; }

 private:
  std::string name_;
  nvinfer1::DataType type_;
  std::vector<int64_t> dims_;
  bool known_;
  bool input_ = false;
  bool output_ = false;
  nvinfer1::ILogger* logger_ = nullptr;
};

class LayerDouble : public nvinfer1::ILayer, public nvinfer_stubs::VLayerStub {
 public:
  LayerDouble(const std::string& name, const std::string& op, nvinfer1::LayerType type);

  nvinfer1::LayerType getType() const noexcept override { return type_; }
  char const* getName() const noexcept override { return name_.c_str(); }
  void setName(char const* name) noexcept override { name_ = name ? name : ""; }
  int32_t getNbInputs() const noexcept override { return static_cast<int32_t>(inputs_.size()); }
  nvinfer1::ITensor* getInput(int32_t index) const noexcept override;
  int32_t getNbOutputs() const noexcept override { return static_cast<int32_t>(outputs_.size()); }
  nvinfer1::ITensor* getOutput(int32_t index) const noexcept override;

  const std::string& op() const { return op_; }
  const std::string& name() const { return name_; }
  std::vector<TensorDouble*>& inputs() { return inputs_; }
  std::vector<TensorDouble*>& outputs() { return outputs_; }
  const std::vector<TensorDouble*>& inputs() const { return inputs_; }
  const std::vector<TensorDouble*>& outputs() const { return outputs_; }

 private:
  std::string name_;
  std::string op_;  // the ONNX operator it came from
  nvinfer1::LayerType type_;
  std::vector<TensorDouble*> inputs_;  // null for an omitted optional input
  std::vector<TensorDouble*> outputs_;
};

class BuilderDouble;

class NetworkDouble : public nvinfer1::INetworkDefinition, public nvinfer_stubs::VNetworkDefinitionStub {
 public:
  NetworkDouble(BuilderDouble* builder, nvinfer1::NetworkDefinitionCreationFlags flags);

  int32_t getNbLayers() const noexcept override { return static_cast<int32_t>(layers_.size()); }
  nvinfer1::ILayer* getLayer(int32_t index) const noexcept override;
  int32_t getNbInputs() const noexcept override { return static_cast<int32_t>(inputs_.size()); }
  nvinfer1::ITensor* getInput(int32_t index) const noexcept override;
  int32_t getNbOutputs() const noexcept override { return static_cast<int32_t>(outputs_.size()); }
  nvinfer1::ITensor* getOutput(int32_t index) const noexcept override;
  char const* getName() const noexcept override { return name_.c_str(); }
  bool hasImplicitBatchDimension() const noexcept override { return !explicit_batch(); }
#if TRT_DOUBLE_AT_LEAST(10, 0)
  nvinfer1::NetworkDefinitionCreationFlags getFlags() const noexcept override { return flags_; }
  bool getFlag(nvinfer1::NetworkDefinitionCreationFlag flag) const noexcept override {
    return (flags_ & (1U << static_cast<uint32_t>(flag))) != 0;
  }
#endif

  bool explicit_batch() const;
  nvinfer1::ILogger* logger() const;
  BuilderDouble* builder() const { return builder_; }

  // For the parser: tensors, layers, inputs and outputs are added as the ONNX graph lists them.
  TensorDouble* add_tensor(const std::string& name, nvinfer1::DataType type, const std::vector<int64_t>& dims,
                           bool known);
  TensorDouble* find(const std::string& name) const;
  LayerDouble* add_layer(const std::string& name, const std::string& op, nvinfer1::LayerType type);
  void add_input(TensorDouble* t) {
    t->mark_input();
    inputs_.push_back(t);
  }
  void add_output(TensorDouble* t) {
    t->mark_output();
    outputs_.push_back(t);
  }
  void set_name(const std::string& name) { name_ = name; }
  // Elements of each initializer (weights, and the few constants beside them), by name.
  std::map<std::string, int64_t>& weights() { return weights_; }
  const std::map<std::string, int64_t>& weights() const { return weights_; }
  const std::vector<std::unique_ptr<LayerDouble>>& layers() const { return layers_; }
  const std::vector<TensorDouble*>& inputs() const { return inputs_; }
  const std::vector<TensorDouble*>& outputs() const { return outputs_; }

 private:
  BuilderDouble* builder_;
  nvinfer1::NetworkDefinitionCreationFlags flags_;
  std::string name_ = "network";
  std::vector<std::unique_ptr<TensorDouble>> tensors_;
  std::map<std::string, TensorDouble*> by_name_;
  std::vector<std::unique_ptr<LayerDouble>> layers_;
  std::vector<TensorDouble*> inputs_;
  std::vector<TensorDouble*> outputs_;
  std::map<std::string, int64_t> weights_;
};

// ---------------------------------------------------------------------------------------------- builder

class ProfileDouble : public nvinfer1::IOptimizationProfile, public nvinfer_stubs::VOptimizationProfileStub {
 public:
  ProfileDouble() { mImpl = this; }
  bool setDimensions(char const* name, nvinfer1::OptProfileSelector select, DimsArg dims) noexcept override;
  nvinfer1::Dims getDimensions(char const* name, nvinfer1::OptProfileSelector select) const noexcept override;
  bool isValid() const noexcept override;

  // The shapes set for one input ([min, opt, max]); empty when none.
  std::vector<std::vector<int64_t>> shapes(const std::string& name) const;

 private:
  std::map<std::string, std::vector<std::vector<int64_t>>> shapes_;  // name -> [min, opt, max]
};

class HostMemoryDouble : public nvinfer1::IHostMemory, public nvinfer_stubs::VHostMemoryStub {
 public:
  explicit HostMemoryDouble(std::string data) : data_(std::move(data)) { mImpl = this; }
  void* data() const noexcept override { return const_cast<char*>(data_.data()); }
  std::size_t size() const noexcept override { return data_.size(); }
  nvinfer1::DataType type() const noexcept override { return nvinfer1::DataType::kINT8; }

 private:
  std::string data_;
};

class TimingCacheDouble : public nvinfer1::ITimingCache, public nvinfer_stubs::VTimingCacheStub {
 public:
  TimingCacheDouble() { mImpl = this; }
  nvinfer1::IHostMemory* serialize() const noexcept override;
  // Parses a serialized cache; false when it is not one of this release's.
  bool load(const void* blob, std::size_t size);
  // Records a layer's timing key; true when it was already there (a reused timing).
  bool record(const std::string& key);

 private:
  mutable std::mutex mutex_;
  std::set<std::string> keys_;
};

class BuilderConfigDouble : public nvinfer1::IBuilderConfig, public nvinfer_stubs::VBuilderConfigStub {
 public:
  explicit BuilderConfigDouble(nvinfer1::ILogger* logger) : logger_(logger) { mImpl = this; }

#if TRT_DOUBLE_AT_LEAST(8, 4)
  void setMemoryPoolLimit(nvinfer1::MemoryPoolType pool, std::size_t size) noexcept override;
#else
  void setMaxWorkspaceSize(std::size_t size) noexcept override { workspace_ = size; }
#endif
  void setFlag(nvinfer1::BuilderFlag flag) noexcept override { flags_ |= 1U << static_cast<uint32_t>(flag); }
  bool getFlag(nvinfer1::BuilderFlag flag) const noexcept override {
    return (flags_ & (1U << static_cast<uint32_t>(flag))) != 0;
  }
#if TRT_DOUBLE_CALIBRATORS
  void setInt8Calibrator(nvinfer1::IInt8Calibrator* calibrator) noexcept override { calibrator_ = calibrator; }
  nvinfer1::IInt8Calibrator* getInt8Calibrator() const noexcept override { return calibrator_; }
  bool setCalibrationProfile(nvinfer1::IOptimizationProfile const* profile) noexcept override;
#endif
#if TRT_DOUBLE_PROGRESS
  void setProgressMonitor(nvinfer1::IProgressMonitor* monitor) noexcept override { monitor_ = monitor; }
#endif
  void setProfilingVerbosity(nvinfer1::ProfilingVerbosity verbosity) noexcept override { verbosity_ = verbosity; }
  nvinfer1::ITimingCache* createTimingCache(void const* blob, std::size_t size) const noexcept override;
  bool setTimingCache(nvinfer1::ITimingCache const& cache, bool ignore_mismatch) noexcept override;
  nvinfer1::ITimingCache const* getTimingCache() const noexcept override { return cache_; }
  int32_t addOptimizationProfile(nvinfer1::IOptimizationProfile const* profile) noexcept override;
  int32_t getNbOptimizationProfiles() const noexcept override { return static_cast<int32_t>(profiles_.size()); }

  std::size_t workspace() const { return workspace_; }
  nvinfer1::ProfilingVerbosity verbosity() const { return verbosity_; }
  const std::vector<const ProfileDouble*>& profiles() const { return profiles_; }
  TimingCacheDouble* timing_cache() const { return cache_; }
#if TRT_DOUBLE_CALIBRATORS
  nvinfer1::IInt8Calibrator* calibrator() const { return calibrator_; }
  const ProfileDouble* calibration_profile() const { return calibration_profile_; }
#endif
#if TRT_DOUBLE_PROGRESS
  nvinfer1::IProgressMonitor* monitor() const { return monitor_; }
#endif

 private:
  nvinfer1::ILogger* logger_;
  uint32_t flags_ = 0;
  std::size_t workspace_ = 0;
  nvinfer1::ProfilingVerbosity verbosity_ = nvinfer1::ProfilingVerbosity::kLAYER_NAMES_ONLY;
  TimingCacheDouble* cache_ = nullptr;
  std::vector<const ProfileDouble*> profiles_;
#if TRT_DOUBLE_CALIBRATORS
  nvinfer1::IInt8Calibrator* calibrator_ = nullptr;
  const ProfileDouble* calibration_profile_ = nullptr;
#endif
#if TRT_DOUBLE_PROGRESS
  nvinfer1::IProgressMonitor* monitor_ = nullptr;
#endif
};

class BuilderDouble : public nvinfer1::IBuilder, public nvinfer_stubs::VBuilderStub {
 public:
  explicit BuilderDouble(nvinfer1::ILogger* logger);
  ~BuilderDouble() override;

  nvinfer1::IBuilderConfig* createBuilderConfig() noexcept override;
  nvinfer1::INetworkDefinition* createNetworkV2(nvinfer1::NetworkDefinitionCreationFlags flags) noexcept override;
  nvinfer1::IOptimizationProfile* createOptimizationProfile() noexcept override;
  nvinfer1::IHostMemory* buildSerializedNetwork(nvinfer1::INetworkDefinition& network,
                                                nvinfer1::IBuilderConfig& config) noexcept override;
  bool platformHasFastFp16() const noexcept override { return fast_fp16_; }
  bool platformHasFastInt8() const noexcept override { return fast_int8_; }
  nvinfer1::ILogger* getLogger() const noexcept override { return logger_; }

 private:
  nvinfer1::ILogger* logger_;
  bool fast_fp16_ = false;
  bool fast_int8_ = false;
  std::vector<std::unique_ptr<ProfileDouble>> profiles_;  // the builder owns the profiles it creates
};

// ---------------------------------------------------------------------------------------------- parser

class ParserErrorDouble : public onnx_stubs::IParserErrorStub {
 public:
  ParserErrorDouble(nvonnxparser::ErrorCode code, const std::string& desc, int node, const std::string& node_name,
                    const std::string& node_op)
      : code_(code), desc_(desc), node_(node), node_name_(node_name), node_op_(node_op) {}

  nvonnxparser::ErrorCode code() const TRT_DOUBLE_PARSER_NOEXCEPT override { return code_; }
  char const* desc() const TRT_DOUBLE_PARSER_NOEXCEPT override { return desc_.c_str(); }
  char const* file() const TRT_DOUBLE_PARSER_NOEXCEPT override { return "tests/tensorrt_double/builder.cpp"; }
  int line() const TRT_DOUBLE_PARSER_NOEXCEPT override { return 0; }
  char const* func() const TRT_DOUBLE_PARSER_NOEXCEPT override { return "parseFromFile"; }
  int node() const TRT_DOUBLE_PARSER_NOEXCEPT override { return node_; }
#if TRT_DOUBLE_AT_LEAST(10, 0)
  char const* nodeName() const TRT_DOUBLE_PARSER_NOEXCEPT override { return node_name_.c_str(); }
  char const* nodeOperator() const TRT_DOUBLE_PARSER_NOEXCEPT override { return node_op_.c_str(); }
#endif

 private:
  nvonnxparser::ErrorCode code_;
  std::string desc_;
  int node_;
  std::string node_name_;
  std::string node_op_;
};

class ParserDouble : public onnx_stubs::IParserStub {
 public:
  ParserDouble(NetworkDouble* network, nvinfer1::ILogger* logger) : network_(network), logger_(logger) {}

  bool parseFromFile(char const* path, int verbosity) TRT_DOUBLE_PARSER_NOEXCEPT override;
  int getNbErrors() const TRT_DOUBLE_PARSER_NOEXCEPT override { return static_cast<int>(errors_.size()); }
  nvonnxparser::IParserError const* getError(int index) const TRT_DOUBLE_PARSER_NOEXCEPT override;
  void clearErrors() TRT_DOUBLE_PARSER_NOEXCEPT override { errors_.clear(); }

 private:
  bool fail(nvonnxparser::ErrorCode code, const std::string& desc, int node = -1, const std::string& name = "",
            const std::string& op = "");

  NetworkDouble* network_;
  nvinfer1::ILogger* logger_;
  std::vector<std::unique_ptr<ParserErrorDouble>> errors_;
};

// ---------------------------------------------------------------------------------------------- runtime

class ContextDouble;

class EngineDouble : public nvinfer1::ICudaEngine, public nvinfer_stubs::VCudaEngineStub {
 public:
  EngineDouble(const Plan& plan, nvinfer1::ILogger* logger);
  ~EngineDouble() override;

#if TRT_DOUBLE_IO_TENSORS
  int32_t getNbIOTensors() const noexcept override { return static_cast<int32_t>(plan_.io.size()); }
  char const* getIOTensorName(int32_t index) const noexcept override;
  nvinfer1::TensorIOMode getTensorIOMode(char const* name) const noexcept override;
  nvinfer1::DataType getTensorDataType(char const* name) const noexcept override;
  nvinfer1::Dims getTensorShape(char const* name) const noexcept override;
  nvinfer1::Dims getProfileShape(char const* name, int32_t profile,
                                 nvinfer1::OptProfileSelector select) const noexcept override;
#else
  int32_t getNbBindings() const noexcept override { return static_cast<int32_t>(plan_.io.size()); }
  int32_t getBindingIndex(char const* name) const noexcept override { return index_of(name); }
  char const* getBindingName(int32_t index) const noexcept override;
  bool bindingIsInput(int32_t index) const noexcept override;
  nvinfer1::DataType getBindingDataType(int32_t index) const noexcept override;
  nvinfer1::Dims getBindingDimensions(int32_t index) const noexcept override;
  nvinfer1::Dims getProfileDimensions(int32_t index, int32_t profile,
                                      nvinfer1::OptProfileSelector select) const noexcept override;
#endif
  std::size_t getDeviceMemorySize() const noexcept override { return static_cast<std::size_t>(plan_.device_memory); }
#if TRT_DOUBLE_AT_LEAST(10, 1)
  int64_t getDeviceMemorySizeV2() const noexcept override { return plan_.device_memory; }
  nvinfer1::IExecutionContext* createExecutionContext(
      nvinfer1::ExecutionContextAllocationStrategy strategy) noexcept override;
#else
  nvinfer1::IExecutionContext* createExecutionContext() noexcept override;
#endif
  nvinfer1::IEngineInspector* createEngineInspector() const noexcept override;
  int32_t getNbLayers() const noexcept override { return static_cast<int32_t>(plan_.layers.size()); }
  int32_t getNbOptimizationProfiles() const noexcept override { return 1; }
  nvinfer1::ProfilingVerbosity getProfilingVerbosity() const noexcept override {
    return static_cast<nvinfer1::ProfilingVerbosity>(plan_.verbosity);
  }
  char const* getName() const noexcept override { return "mlmark-tensorrt-test-double"; }

  const Plan& plan() const { return plan_; }
  nvinfer1::ILogger* logger() const { return logger_; }
  int index_of(char const* name) const;
  nvinfer1::Dims dims_of(int index, const std::vector<int64_t>& dims) const;
  // Profile 0's holders (a context takes it implicitly, or by setOptimizationProfileAsync).
  bool claim_profile(const ContextDouble* context, bool implicit);
  void release_profile(const ContextDouble* context);

 private:
  nvinfer1::IExecutionContext* create_context();

  Plan plan_;
  nvinfer1::ILogger* logger_;
  std::mutex mutex_;
  std::set<const ContextDouble*> profile_holders_;
};

class ContextDouble : public nvinfer1::IExecutionContext, public nvinfer_stubs::VExecutionContextStub {
 public:
  ContextDouble(EngineDouble* engine, void* device_memory);
  ~ContextDouble() override;

  nvinfer1::ICudaEngine const& getEngine() const noexcept override { return *engine_; }
  int32_t getOptimizationProfile() const noexcept override { return profile_; }
  bool setOptimizationProfileAsync(int32_t index, cudaStream_t stream) noexcept override;
  bool allInputDimensionsSpecified() const noexcept override;
#if TRT_DOUBLE_IO_TENSORS
  bool setInputShape(char const* name, nvinfer1::Dims const& dims) noexcept override;
  nvinfer1::Dims getTensorShape(char const* name) const noexcept override;
  bool setTensorAddress(char const* name, void* data) noexcept override;
  bool enqueueV3(cudaStream_t stream) noexcept override;
#else
  bool setBindingDimensions(int32_t index, nvinfer1::Dims dims) noexcept override;
  nvinfer1::Dims getBindingDimensions(int32_t index) const noexcept override;
  bool enqueueV2(void* const* bindings, cudaStream_t stream, cudaEvent_t* input_consumed) noexcept override;
#endif
#if TRT_DOUBLE_AT_LEAST(8, 6)
  bool setNvtxVerbosity(nvinfer1::ProfilingVerbosity verbosity) noexcept override;
#endif

  void set_profile(int32_t profile) { profile_ = profile; }

 private:
  bool set_shape(int index, const std::vector<int64_t>& dims);
  std::vector<int64_t> shape_of(int index) const;  // -1 where not yet known
  bool enqueue(const std::vector<void*>& addresses, cudaStream_t stream);
  bool error(const std::string& message) const;

  EngineDouble* engine_;
  void* device_memory_;
  int32_t profile_ = -1;
  std::vector<std::vector<int64_t>> shapes_;  // inputs: as set; outputs: unused
  std::vector<void*> addresses_;
  bool refuse_capture_ = false;  // MLMARK_TRT_DOUBLE_CAPTURE=refuse, read once
  nvinfer1::ProfilingVerbosity nvtx_ = nvinfer1::ProfilingVerbosity::kLAYER_NAMES_ONLY;
};

class InspectorDouble : public nvinfer1::IEngineInspector, public nvinfer_stubs::VEngineInspectorStub {
 public:
  explicit InspectorDouble(const EngineDouble* engine) : engine_(engine) { mImpl = this; }

  bool setExecutionContext(nvinfer1::IExecutionContext const* context) noexcept override;
  nvinfer1::IExecutionContext const* getExecutionContext() const noexcept override { return context_; }
#if TRT_DOUBLE_AT_LEAST(8, 6)  // const from 8.6 on (8.2's are not)
  char const* getLayerInformation(int32_t index, nvinfer1::LayerInformationFormat format) const noexcept override;
  char const* getEngineInformation(nvinfer1::LayerInformationFormat format) const noexcept override;
#else
  char const* getLayerInformation(int32_t index, nvinfer1::LayerInformationFormat format) noexcept override;
  char const* getEngineInformation(nvinfer1::LayerInformationFormat format) noexcept override;
#endif

 private:
  std::string layer_json(const PlanLayer& layer) const;
  std::string layer_line(const PlanLayer& layer) const;

  const EngineDouble* engine_;
  nvinfer1::IExecutionContext const* context_ = nullptr;
  mutable std::string text_;  // the last answer, valid until the next call (as the headers document)
};

class RuntimeDouble : public nvinfer1::IRuntime, public nvinfer_stubs::VRuntimeStub {
 public:
  explicit RuntimeDouble(nvinfer1::ILogger* logger);
  ~RuntimeDouble() override;

#if TRT_DOUBLE_AT_LEAST(10, 0)
  nvinfer1::ICudaEngine* deserializeCudaEngine(void const* blob, std::size_t size) noexcept override;
#else
  nvinfer1::ICudaEngine* deserializeCudaEngine(void const* blob, std::size_t size,
                                               nvinfer1::IPluginFactory* factory) noexcept override;
#endif
  nvinfer1::ILogger* getLogger() const noexcept override { return logger_; }

 private:
  nvinfer1::ILogger* logger_;
};

}  // namespace trt_double

#endif  // TRT_DOUBLE_DOUBLE_H
