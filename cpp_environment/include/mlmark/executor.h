// The executor interface: what the timed loop drives. One Executor is one execution context (a
// TensorRT IExecutionContext, or the calibrated spin kernel); the loop creates one per stream from an
// ExecutorFactory, allocates the buffers the executor declares, and calls enqueue() once per inference.
//
// Internal to the library (C++14, not part of the C ABI). Implementations report failure by throwing
// mlmark::Error; the C boundary turns it into a status code and a last-error message.
#ifndef MLMARK_EXECUTOR_H
#define MLMARK_EXECUTOR_H

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlmark/mlmark_c.h"

namespace mlmark {

// An error with a status code (MLMARK_ERR_*) and a one-line message for the user.
class Error : public std::runtime_error {
 public:
  Error(int status, const std::string& message) : std::runtime_error(message), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

// One input or output tensor of an inference, as the loop allocates it. An executor without typed
// tensors (the spin kernel) leaves shape empty: the loop then reports bytes of MLMARK_DTYPE_UINT8.
struct Binding {
  Binding(const std::string& name_, std::size_t bytes_, bool is_input_, const std::vector<int64_t>& shape_ = {},
          int dtype_ = MLMARK_DTYPE_UINT8)
      : name(name_), bytes(bytes_), is_input(is_input_), shape(shape_), dtype(dtype_) {}

  std::string name;
  std::size_t bytes;
  bool is_input;
  std::vector<int64_t> shape;  // batch included
  int dtype;                   // MLMARK_DTYPE_*
};

// One execution context: enqueues one inference at a time on the stream it is given.
class Executor {
 public:
  virtual ~Executor() {}

  // The tensors of one inference, in the order enqueue() receives their device pointers.
  virtual std::vector<Binding> bindings() const = 0;

  // Enqueue one inference on stream, reading and writing device_buffers[i] for bindings()[i]. It must
  // not synchronize: the loop measures the enqueued work with events and its own wait.
  virtual void enqueue(cudaStream_t stream, void* const* device_buffers) = 0;

  // True when enqueue() only enqueues work on stream (no host sync, no allocation), so the loop may
  // capture it into a CUDA graph once and replay that graph instead of calling enqueue(). The loop runs
  // one plain enqueue on the stream before capturing: TensorRT does lazy setup on a context's first one.
  virtual bool capture_safe() const { return false; }

  // Change a named parameter of a calibrated workload for later inferences, keeping any graph captured
  // from this executor valid. False when the executor has no such parameter (the usual case).
  virtual bool set_parameter(const std::string& name, double value) {
    (void)name;
    (void)value;
    return false;
  }
};

// Creates execution contexts that share one model (one engine, many contexts).
class ExecutorFactory {
 public:
  virtual ~ExecutorFactory() {}

  // Short name for logs and results.
  virtual std::string name() const = 0;

  // A new execution context on the current CUDA device.
  virtual std::unique_ptr<Executor> create() = 0;
};

}  // namespace mlmark

#endif  // MLMARK_EXECUTOR_H
