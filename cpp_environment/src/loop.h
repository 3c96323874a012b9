// The timed inference loop: one executor and one CUDA stream per unit of concurrency, all kept in
// flight by the calling host thread, each inference timed end to end (host steady clock) and on the
// GPU (CUDA events around the executor's work).
#ifndef MLMARK_LOOP_H
#define MLMARK_LOOP_H

#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cuda_util.h"
#include "launch_gate.h"
#include "memory.h"
#include "mlmark/executor.h"
#include "mlmark/mlmark_c.h"

namespace mlmark {

class Loop {
 public:
  // Validates config and prepares everything a run needs: streams, executors, buffers, events,
  // graphs. Throws Error with a clear message when the device cannot do what config asks.
  explicit Loop(const mlmark_loop_config& config);
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // The settings in use; the run fields (iterations, warmup, wall_s) are zero.
  mlmark_run_info info() const;

  // Set a named parameter on every stream's executor (see Executor::set_parameter).
  void set_parameter(const std::string& name, double value);

  // The inputs and outputs of one inference, in the order the functions below index them.
  const std::vector<Binding>& bindings() const { return bindings_; }

  // Copy host data into an input binding of one slot, or of all slots when slot is -1 (see
  // mlmark_loop_set_input). With a slot, only that slot is touched: different slots may be set from
  // different threads at once.
  void set_input(int slot, int binding, const void* data, std::size_t bytes);

  // One synchronous inference on a slot through the timed path; outputs[i] receives output binding i
  // (NULL skips it); count must be the number of bindings. Touches that slot only, so that one thread per
  // slot may infer at once (the harness's loop for workloads with host post-processing).
  void infer(int slot, void* const* outputs, int count);

  // Why CUDA graphs were asked for but are not used ("" when they are, or were not asked for).
  const std::string& graph_fallback() const { return graph_fallback_; }

  // warmup untimed inferences, then iterations timed ones (see mlmark_loop_run).
  void run(int64_t iterations, int64_t warmup, double* e2e_s, double* gpu_s, double* enqueue_s, mlmark_run_info* info);

 private:
  using Clock = std::chrono::steady_clock;

  struct Slot {
    cudaStream_t stream = nullptr;
    std::unique_ptr<Executor> executor;
    std::vector<Buffer> buffers;  // what kernels read and write: device or zero-copy memory
    std::vector<Buffer> staging;  // pinned host copies, when transfers are on
    std::vector<void*> pointers;  // device pointers, one per binding, in binding order
    // Two sets of events, used alternately: the next inference is enqueued before the finished
    // one's GPU time is read, so its events must not be re-recorded yet.
    cudaEvent_t start[2] = {nullptr, nullptr};
    cudaEvent_t end[2] = {nullptr, nullptr};
    cudaEvent_t done[2] = {nullptr, nullptr};  // after the output copies; null when there are none
    cudaGraphExec_t graph = nullptr;
    std::unique_ptr<LaunchGate> gate;  // launch_gate on: holds the stream while the host enqueues
    bool busy = false;
    int parity = 1;
    int64_t index = 0;
    Clock::time_point t0;        // before the first enqueue call of the inference in flight
    Clock::time_point enqueued;  // after its last enqueue call

    ~Slot();
    cudaEvent_t completion() const { return done[parity] ? done[parity] : end[parity]; }
  };

  // The constructor's steps, in order.
  static void validate(const mlmark_loop_config& config);  // Error for a value out of range
  void allow_mapped_host_memory();
  void choose_memory(const mlmark_loop_config& config, const DeviceProps& props);  // resolves auto, refuses
  void check_buffers_fit() const;  // Error before allocating what cannot fit
  Slot& slot_at(int slot);
  void setup_slot(Slot& slot, int number, std::unique_ptr<Executor> executor);
  // Capture and verify the slot's graph; false (reason in *why) when the capture failed, as TensorRT
  // reports for engines with operations a capture does not permit.
  bool capture_graph(Slot& slot, std::string* why);
  void drop_graphs() noexcept;
  void sync_slot(Slot& slot);
  void issue(Slot& slot, int64_t index);
  void check_gate(Slot& slot) const;  // Error when the slot's gate gave up waiting for the host
  Slot* wait_any(Clock::time_point* finished);
  void phase(int64_t count, double* e2e_s, double* gpu_s, double* enqueue_s, double* wall_s);
  void drain() noexcept;

  int device_ = 0;
  int concurrency_ = 1;
  int sync_mode_ = MLMARK_SYNC_BLOCKING;
  bool cuda_graph_ = false;
  std::string graph_fallback_;
  bool launch_gate_ = false;
  bool transfers_ = true;
  int memory_ = MLMARK_MEMORY_DEVICE;
  int zero_copy_alloc_ = MLMARK_ZERO_COPY_MAPPED;
  bool integrated_ = false;
  bool concurrent_managed_access_ = false;
  std::size_t input_bytes_ = 0;
  std::size_t output_bytes_ = 0;
  std::unique_ptr<ExecutorFactory> factory_;
  std::vector<Binding> bindings_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<Slot*> fifo_;  // blocking and sleep modes: in-flight slots in issue order
  std::size_t fifo_head_ = 0;
  std::size_t next_poll_ = 0;  // spin mode: where the next poll round starts, for fairness
};

}  // namespace mlmark

#endif  // MLMARK_LOOP_H
