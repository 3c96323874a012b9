#include "tensorrt/trt_compat.h"

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "log.h"
#include "mlmark/executor.h"
#include "tensorrt/trt_common.h"

// The release boundaries, named once. Sources: each release's headers (TRT_DEPRECATED markers and what
// exists) and NVIDIA's migration notes.
#define MLMARK_TRT_IMPLICIT_INT8 (!MLMARK_TRT_AT_LEAST(10, 1))          // calibrators deprecated in 10.1, removed in 11
#define MLMARK_TRT_WEAK_TYPING (!MLMARK_TRT_AT_LEAST(10, 12))           // kFP16/kINT8 deprecated in 10.12, removed in 11
#define MLMARK_TRT_STRONG_TYPING_FLAG (MLMARK_TRT_AT_LEAST(10, 12) && !MLMARK_TRT_AT_LEAST(11, 0))  // opt-in, then always on
#define MLMARK_TRT_EXPLICIT_BATCH_FLAG (!MLMARK_TRT_AT_LEAST(10, 0))    // the flag is the default from 10.0 on
#define MLMARK_TRT_PROGRESS_MONITOR MLMARK_TRT_AT_LEAST(10, 0)
#define MLMARK_TRT_IO_TENSOR_API MLMARK_TRT_AT_LEAST(8, 5)              // bindings API deprecated in 8.5
#define MLMARK_TRT_MEMORY_POOLS MLMARK_TRT_AT_LEAST(8, 4)               // setMaxWorkspaceSize deprecated in 8.4
#define MLMARK_TRT_BUILDER_FAST_QUERIES (!MLMARK_TRT_AT_LEAST(10, 5))   // platformHasFast* deprecated in 10.5
#define MLMARK_TRT_DEVICE_MEMORY_V2 MLMARK_TRT_AT_LEAST(10, 1)          // getDeviceMemorySize deprecated in 10.1
#define MLMARK_TRT_NVTX_VERBOSITY MLMARK_TRT_AT_LEAST(8, 6)
#define MLMARK_TRT_PROFILE_PER_CONTEXT (!MLMARK_TRT_AT_LEAST(9, 0))     // later contexts get profile 0 from 9.0 on
#define MLMARK_TRT_SHARED_PROFILE MLMARK_TRT_AT_LEAST(8, 6)             // a profile unique per context before 8.6
#define MLMARK_TRT_PARSER_NODE_NAMES MLMARK_TRT_AT_LEAST(10, 0)
#define MLMARK_TRT_VERSION_PARTS MLMARK_TRT_AT_LEAST(10, 0)             // getInferLibMajorVersion() and friends

namespace mlmark {
namespace trt {
namespace compat {
namespace {

using Clock = std::chrono::steady_clock;

std::string version_string(int major, int minor, int patch) {
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

#if MLMARK_TRT_IMPLICIT_INT8
// Serves a calibration table as TensorRT's calibration cache and no batches: with every scale in the
// cache, TensorRT never asks for data, so the table alone decides the INT8 ranges.
class TableCalibrator : public nvinfer1::IInt8EntropyCalibrator2, public Attachment {
 public:
  TableCalibrator(const std::string& table, int batch) : table_(table), batch_(batch) {}

  int32_t getBatchSize() const noexcept override { return batch_; }

  bool getBatch(void* bindings[], char const* names[], int32_t nbBindings) noexcept override {
    (void)bindings;
    (void)names;
    (void)nbBindings;
    return false;
  }

  void const* readCalibrationCache(std::size_t& length) noexcept override {
    length = table_.size();
    return table_.data();
  }

  void writeCalibrationCache(void const* ptr, std::size_t length) noexcept override {
    (void)ptr;
    (void)length;
  }

 private:
  std::string table_;
  int32_t batch_;
};
#endif

#if MLMARK_TRT_PROGRESS_MONITOR
// IProgressMonitor to the log: the top phases and their first sub-phases at info level, with their steps
// at every tenth of the way or every 10 s; deeper phases at debug level.
class ProgressLog : public nvinfer1::IProgressMonitor, public Attachment {
 public:
  void phaseStart(char const* phaseName, char const* parentPhase, int32_t nbSteps) noexcept override {
    try {
      std::lock_guard<std::mutex> lock(mutex_);
      Phase p;
      p.depth = 0;
      if (parentPhase) {
        auto parent = phases_.find(parentPhase);
        p.depth = parent == phases_.end() ? 1 : parent->second.depth + 1;
      }
      p.steps = nbSteps;
      p.started = p.logged = Clock::now();
      phases_[phaseName ? phaseName : ""] = p;
      log(level(p), "engine build: %s%s (%d steps)", indent(p), phaseName ? phaseName : "?", static_cast<int>(nbSteps));
    } catch (...) {
    }
  }

  bool stepComplete(char const* phaseName, int32_t step) noexcept override {
    try {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = phases_.find(phaseName ? phaseName : "");
      if (it == phases_.end() || it->second.steps <= 0) return true;
      Phase& p = it->second;
      const int tenth = static_cast<int>((static_cast<int64_t>(step) + 1) * 10 / p.steps);
      const Clock::time_point now = Clock::now();
      if (tenth > p.tenth || now - p.logged > std::chrono::seconds(10)) {
        p.tenth = tenth;
        p.logged = now;
        log(level(p), "engine build: %s%s %d/%d", indent(p), phaseName, static_cast<int>(step) + 1,
            static_cast<int>(p.steps));
      }
    } catch (...) {
    }
    return true;  // never cancel: a build is stopped by killing the process
  }

  void phaseFinish(char const* phaseName) noexcept override {
    try {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = phases_.find(phaseName ? phaseName : "");
      if (it == phases_.end()) return;
      const double s = std::chrono::duration<double>(Clock::now() - it->second.started).count();
      log(level(it->second), "engine build: %s%s done in %.1f s", indent(it->second), phaseName, s);
      phases_.erase(it);
    } catch (...) {
    }
  }

 private:
  struct Phase {
    int depth = 0;
    int32_t steps = 0;
    int tenth = 0;
    Clock::time_point started;
    Clock::time_point logged;
  };
  static int level(const Phase& p) { return p.depth <= 1 ? MLMARK_LOG_INFO : MLMARK_LOG_DEBUG; }
  static const char* indent(const Phase& p) { return p.depth == 0 ? "" : (p.depth == 1 ? "  " : "    "); }

  std::mutex mutex_;
  std::map<std::string, Phase> phases_;
};
#else
// Before IProgressMonitor a build says nothing for minutes (a Nano takes ten or more): a line every 30 s
// shows it is alive.
class Heartbeat : public Attachment {
 public:
  Heartbeat() : started_(Clock::now()), thread_([this] { run(); }) {}
  ~Heartbeat() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!cv_.wait_for(lock, std::chrono::seconds(30), [this] { return stop_; })) {
      const double s = std::chrono::duration<double>(Clock::now() - started_).count();
      log(MLMARK_LOG_INFO, "engine build: still optimizing, %.0f s so far", s);
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
  Clock::time_point started_;
  std::thread thread_;  // last: it starts once everything above exists
};
#endif

}  // namespace

Features features() {
  Features f;
  f.implicit_int8 = MLMARK_TRT_IMPLICIT_INT8;
  f.weak_typing = MLMARK_TRT_WEAK_TYPING;
  f.progress_monitor = MLMARK_TRT_PROGRESS_MONITOR;
  f.inspector = true;
  f.io_tensor_api = MLMARK_TRT_IO_TENSOR_API;
  f.builder_fast_queries = MLMARK_TRT_BUILDER_FAST_QUERIES;
  return f;
}

std::string header_version() { return version_string(NV_TENSORRT_MAJOR, NV_TENSORRT_MINOR, NV_TENSORRT_PATCH); }

std::string runtime_version() {
#if MLMARK_TRT_VERSION_PARTS
  return version_string(getInferLibMajorVersion(), getInferLibMinorVersion(), getInferLibPatchVersion());
#else
  // 8.x encodes major * 1000 + minor * 100 + patch (8.2.3 is 8203).
  const int v = getInferLibVersion();
  return version_string(v / 1000, (v / 100) % 10, v % 100);
#endif
}

void fast_precisions(int cc_major, int cc_minor, bool ask_builder, bool* fp16, bool* int8, bool* from_builder) {
  *from_builder = false;
#if MLMARK_TRT_BUILDER_FAST_QUERIES
  Ptr<nvinfer1::IBuilder> builder(ask_builder ? nvinfer1::createInferBuilder(logger()) : nullptr);
  if (builder) {
    *fp16 = builder->platformHasFastFp16();
    *int8 = builder->platformHasFastInt8();
    *from_builder = true;
    return;
  }
#else
  (void)ask_builder;
#endif
  const int cc = cc_major * 10 + cc_minor;
  *fp16 = cc == 53 || cc == 60 || cc == 62 || cc >= 70;
  *int8 = cc == 61 || cc >= 70;
}

nvinfer1::INetworkDefinition* create_network(nvinfer1::IBuilder& builder) {
#if MLMARK_TRT_EXPLICIT_BATCH_FLAG
  const auto flags = 1U << static_cast<uint32_t>(nvinfer1::NetworkDefinitionCreationFlag::kEXPLICIT_BATCH);
#elif MLMARK_TRT_STRONG_TYPING_FLAG
  const auto flags = 1U << static_cast<uint32_t>(nvinfer1::NetworkDefinitionCreationFlag::kSTRONGLY_TYPED);
#else
  const nvinfer1::NetworkDefinitionCreationFlags flags = 0;
#endif
  return builder.createNetworkV2(flags);
}

void set_workspace(nvinfer1::IBuilderConfig& config, std::size_t bytes) {
#if MLMARK_TRT_MEMORY_POOLS
  config.setMemoryPoolLimit(nvinfer1::MemoryPoolType::kWORKSPACE, bytes);
#else
  config.setMaxWorkspaceSize(bytes);
#endif
}

bool set_precision_flags(nvinfer1::IBuilderConfig& config, bool fp16, bool int8, bool fast_fp16) {
#if MLMARK_TRT_WEAK_TYPING
  if (fp16 || (int8 && fast_fp16)) config.setFlag(nvinfer1::BuilderFlag::kFP16);
  if (int8) config.setFlag(nvinfer1::BuilderFlag::kINT8);
  return true;
#else
  (void)config;
  (void)fp16;
  (void)int8;
  (void)fast_fp16;
  return false;
#endif
}

const nvinfer1::IOptimizationProfile* fix_dynamic_inputs(nvinfer1::IBuilder& builder, nvinfer1::IBuilderConfig& config,
                                                         const std::vector<DynamicInput>& inputs) {
  if (inputs.empty()) return nullptr;
#if MLMARK_TRT_SHARED_PROFILE
  nvinfer1::IOptimizationProfile* profile = builder.createOptimizationProfile();
  if (!profile) throw Error(MLMARK_ERR_TENSORRT, "creating an optimization profile failed");
  const nvinfer1::OptProfileSelector selectors[] = {nvinfer1::OptProfileSelector::kMIN,
                                                    nvinfer1::OptProfileSelector::kOPT,
                                                    nvinfer1::OptProfileSelector::kMAX};
  for (const DynamicInput& in : inputs) {
    const char* name = in.tensor->getName();
    for (nvinfer1::OptProfileSelector s : selectors) {
      if (!profile->setDimensions(name, s, to_dims(in.shape))) {
        throw Error(MLMARK_ERR_TENSORRT, std::string("setting the optimization profile of input '") + (name ? name : "?") +
                                             "' to " + shape_string(in.shape) + " failed");
      }
    }
  }
  if (config.addOptimizationProfile(profile) < 0) {
    throw Error(MLMARK_ERR_TENSORRT, "TensorRT refused the optimization profile (min = opt = max at the task's batch)");
  }
  return profile;
#else
  (void)builder;
  (void)config;
  for (const DynamicInput& in : inputs) in.tensor->setDimensions(to_dims(in.shape));
  return nullptr;
#endif
}

std::unique_ptr<Attachment> attach_calibration_table(nvinfer1::IBuilderConfig& config, const std::string& table,
                                                     int batch, const nvinfer1::IOptimizationProfile* profile) {
#if MLMARK_TRT_IMPLICIT_INT8
  std::unique_ptr<TableCalibrator> calibrator(new TableCalibrator(table, batch));
  config.setInt8Calibrator(calibrator.get());
  if (profile && !config.setCalibrationProfile(profile)) {
    throw Error(MLMARK_ERR_TENSORRT, "TensorRT refused the calibration profile (the engine's optimization profile)");
  }
  return std::unique_ptr<Attachment>(std::move(calibrator));
#else
  (void)config;
  (void)table;
  (void)batch;
  (void)profile;
  throw Error(MLMARK_ERR_UNSUPPORTED, "TensorRT " + header_version() +
                                          " has no implicit INT8 (calibrators are deprecated from 10.1 and gone in 11): "
                                          "give the quantized (Q/DQ) ONNX made from the calibration table instead");
#endif
}

std::unique_ptr<Attachment> attach_progress(nvinfer1::IBuilderConfig& config) {
#if MLMARK_TRT_PROGRESS_MONITOR
  std::unique_ptr<ProgressLog> monitor(new ProgressLog());
  config.setProgressMonitor(monitor.get());
  return std::unique_ptr<Attachment>(std::move(monitor));
#else
  (void)config;
  return std::unique_ptr<Attachment>(new Heartbeat());
#endif
}

std::string parser_error(const nvonnxparser::IParserError& error) {
  std::string where;
  if (error.node() >= 0) {
    where = "node " + std::to_string(error.node());
#if MLMARK_TRT_PARSER_NODE_NAMES
    const char* op = error.nodeOperator();
    const char* name = error.nodeName();
    if (op && *op) where += " (" + std::string(op) + (name && *name ? " '" + std::string(name) + "'" : "") + ")";
#endif
    where += ": ";
  }
  return where + (error.desc() ? error.desc() : "unknown error");
}

std::vector<IOTensor> io_tensors(const nvinfer1::ICudaEngine& engine) {
  std::vector<IOTensor> out;
#if MLMARK_TRT_IO_TENSOR_API
  const int32_t n = engine.getNbIOTensors();
  for (int32_t i = 0; i < n; ++i) {
    const char* name = engine.getIOTensorName(i);
    IOTensor t;
    t.name = name ? name : "";
    t.is_input = engine.getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT;
    t.dtype = static_cast<int>(engine.getTensorDataType(name));
    t.shape = to_vector(engine.getTensorShape(name));
    t.index = i;
    out.push_back(t);
  }
#else
  const int32_t n = engine.getNbBindings();
  for (int32_t i = 0; i < n; ++i) {
    const char* name = engine.getBindingName(i);
    IOTensor t;
    t.name = name ? name : "";
    t.is_input = engine.bindingIsInput(i);
    t.dtype = static_cast<int>(engine.getBindingDataType(i));
    t.shape = to_vector(engine.getBindingDimensions(i));
    t.index = i;
    out.push_back(t);
  }
#endif
  return out;
}

int64_t context_memory_bytes(const nvinfer1::ICudaEngine& engine) {
#if MLMARK_TRT_DEVICE_MEMORY_V2
  return engine.getDeviceMemorySizeV2();
#else
  return static_cast<int64_t>(engine.getDeviceMemorySize());
#endif
}

std::vector<std::vector<int64_t>> prepare_context(nvinfer1::IExecutionContext& context,
                                                  const nvinfer1::ICudaEngine& engine,
                                                  const std::vector<IOTensor>& tensors) {
  bool dynamic = false;
  for (const IOTensor& t : tensors) {
    for (int64_t d : t.shape) dynamic = dynamic || (t.is_input && d < 0);
  }
  if (dynamic) {
#if MLMARK_TRT_PROFILE_PER_CONTEXT
    if (context.getOptimizationProfile() < 0) {
      // Before 8.6 one profile serves one context at a time, so this fails for the second context of an
      // engine with dynamic shapes (MLMark's own engines have none: the builder fixes the batch).
      cudaStream_t stream = nullptr;
      if (cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess) {
        cudaGetLastError();
        throw Error(MLMARK_ERR_CUDA, "creating a stream to select the engine's optimization profile failed");
      }
      const bool ok = context.setOptimizationProfileAsync(0, stream);
      cudaStreamSynchronize(stream);
      cudaStreamDestroy(stream);
      cudaGetLastError();
      if (!ok) {
        throw Error(MLMARK_ERR_UNSUPPORTED, "this engine has dynamic input shapes and TensorRT " + header_version() +
                                                " lets only one execution context use its optimization profile: "
                                                "use concurrency 1, or an engine with fixed shapes");
      }
    }
#endif
    for (const IOTensor& t : tensors) {
      bool has_dynamic = false;
      for (int64_t d : t.shape) has_dynamic = has_dynamic || d < 0;
      if (!t.is_input || !has_dynamic) continue;
#if MLMARK_TRT_IO_TENSOR_API
      const nvinfer1::Dims opt = engine.getProfileShape(t.name.c_str(), 0, nvinfer1::OptProfileSelector::kOPT);
      const bool ok = context.setInputShape(t.name.c_str(), opt);
#else
      const nvinfer1::Dims opt = engine.getProfileDimensions(t.index, 0, nvinfer1::OptProfileSelector::kOPT);
      const bool ok = context.setBindingDimensions(t.index, opt);
#endif
      if (!ok) {
        throw Error(MLMARK_ERR_TENSORRT, "setting input '" + t.name + "' to its profile shape " +
                                             shape_string(to_vector(opt)) + " failed");
      }
    }
  }
#if MLMARK_TRT_NVTX_VERBOSITY
  // False only when the engine was built with less than names (kNONE); then nothing is annotated anyway.
  context.setNvtxVerbosity(nvinfer1::ProfilingVerbosity::kLAYER_NAMES_ONLY);
#else
  (void)engine;
#endif
  std::vector<std::vector<int64_t>> shapes;
  for (const IOTensor& t : tensors) {
#if MLMARK_TRT_IO_TENSOR_API
    shapes.push_back(to_vector(context.getTensorShape(t.name.c_str())));
#else
    shapes.push_back(to_vector(context.getBindingDimensions(t.index)));
#endif
  }
  return shapes;
}

bool enqueue(nvinfer1::IExecutionContext& context, const std::vector<IOTensor>& tensors, void* const* buffers,
             std::vector<void*>* bound, cudaStream_t stream) {
#if MLMARK_TRT_IO_TENSOR_API
  // The loop gives a context the same buffers every time: set the addresses once, not per inference.
  if (bound->size() != tensors.size()) bound->assign(tensors.size(), nullptr);
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    if ((*bound)[i] == buffers[i]) continue;
    if (!context.setTensorAddress(tensors[i].name.c_str(), buffers[i])) return false;
    (*bound)[i] = buffers[i];
  }
  return context.enqueueV3(stream);
#else
  (void)tensors;
  (void)bound;
  // io_tensors() lists bindings in binding-index order, which is the order enqueueV2 takes.
  return context.enqueueV2(buffers, stream, nullptr);
#endif
}

}  // namespace compat
}  // namespace trt
}  // namespace mlmark
