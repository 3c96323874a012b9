// A TensorRT engine as the loop's executor: one deserialized engine shared by all streams, one
// IExecutionContext per stream.
#include <cuda_runtime_api.h>

#include <memory>
#include <string>
#include <vector>

#include "log.h"
#include "memory.h"
#include "tensorrt/backend.h"
#include "tensorrt/trt_common.h"
#include "tensorrt/trt_compat.h"

namespace mlmark {
namespace trt {
namespace {

std::size_t free_device_memory() {
  std::size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return free_bytes;
}

class EngineExecutor : public Executor {
 public:
  EngineExecutor(std::shared_ptr<Engine> engine, Ptr<nvinfer1::IExecutionContext> context,
                 const std::vector<compat::IOTensor>& tensors, const std::vector<Binding>& bindings)
      : engine_(std::move(engine)), context_(std::move(context)), tensors_(tensors), bindings_(bindings) {}

  ~EngineExecutor() override {
    context_.reset();  // before the engine it belongs to
  }

  std::vector<Binding> bindings() const override { return bindings_; }

  void enqueue(cudaStream_t stream, void* const* device_buffers) override {
    if (!compat::enqueue(*context_, tensors_, device_buffers, &bound_, stream)) {
      const std::string reason = logger().last_error();
      throw Error(MLMARK_ERR_TENSORRT, "TensorRT could not enqueue an inference of " + engine_->path +
                                           (reason.empty() ? std::string() : ": " + reason));
    }
  }

  // TensorRT contexts may be captured into a CUDA graph once they have run one plain enqueue on the
  // stream (the loop does that before capturing).
  bool capture_safe() const override { return true; }

 private:
  std::shared_ptr<Engine> engine_;
  Ptr<nvinfer1::IExecutionContext> context_;
  std::vector<compat::IOTensor> tensors_;
  std::vector<Binding> bindings_;
  std::vector<void*> bound_;  // addresses already given to the context
};

class EngineFactory : public ExecutorFactory {
 public:
  explicit EngineFactory(const std::string& path) : engine_(load_engine(path)), tensors_(compat::io_tensors(*engine_->engine)) {
    if (tensors_.empty()) throw Error(MLMARK_ERR_MODEL, "the engine " + path + " has no inputs or outputs");
    context_bytes_ = compat::context_memory_bytes(*engine_->engine);
    log(MLMARK_LOG_INFO, "engine %s: %zu tensors, %s of activation memory per context, %s", path.c_str(),
        tensors_.size(), format_bytes(static_cast<std::size_t>(context_bytes_ > 0 ? context_bytes_ : 0)).c_str(),
        runtime_label().c_str());
  }

  std::string name() const override { return "tensorrt"; }

  std::unique_ptr<Executor> create() override {
    const std::size_t free_bytes = free_device_memory();
    const std::size_t need = static_cast<std::size_t>(context_bytes_ > 0 ? context_bytes_ : 0);
    const std::string which = "execution context " + std::to_string(contexts_ + 1);
    if (free_bytes != 0 && need > free_bytes) {
      throw Error(MLMARK_ERR_OUT_OF_MEMORY, "out of GPU memory: " + which + " of " + engine_->path + " needs " +
                                                format_bytes(need) + " but " + format_bytes(free_bytes) +
                                                " are free; lower the concurrency or the batch");
    }
    ErrorCapture errors;
    Ptr<nvinfer1::IExecutionContext> context(engine_->engine->createExecutionContext());
    if (!context) {
      if (errors.out_of_memory() || need > free_device_memory()) {
        throw Error(MLMARK_ERR_OUT_OF_MEMORY, "out of GPU memory creating " + which + " of " + engine_->path +
                                                  " (" + format_bytes(need) + " each); lower the concurrency or the batch");
      }
      throw Error(MLMARK_ERR_TENSORRT, "TensorRT could not create " + which + " of " + engine_->path + ": " +
                                           errors.summary("no detail"));
    }
    const std::vector<std::vector<int64_t>> shapes = compat::prepare_context(*context, *engine_->engine, tensors_);
    std::vector<Binding> bindings;
    for (std::size_t i = 0; i < tensors_.size(); ++i) {
      const compat::IOTensor& t = tensors_[i];
      bindings.push_back(Binding(t.name, tensor_bytes(shapes[i], t.dtype, t.name), t.is_input, shapes[i], t.dtype));
    }
    ++contexts_;
    return std::unique_ptr<Executor>(new EngineExecutor(engine_, std::move(context), tensors_, bindings));
  }

 private:
  std::shared_ptr<Engine> engine_;
  std::vector<compat::IOTensor> tensors_;
  int64_t context_bytes_ = 0;
  int contexts_ = 0;
};

}  // namespace

std::unique_ptr<ExecutorFactory> make_engine_factory(const std::string& engine_path) {
  return std::unique_ptr<ExecutorFactory>(new EngineFactory(engine_path));
}

}  // namespace trt
}  // namespace mlmark
