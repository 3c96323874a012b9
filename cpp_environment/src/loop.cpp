#include "loop.h"

#include <cstring>
#include <string>

#include "cuda_util.h"
#include "log.h"
#include "spin_executor.h"
#include "tensorrt/backend.h"

namespace mlmark {
namespace {

const int kMaxConcurrency = 1024;
// A spin kernel longer than this is a unit mistake (seconds for nanoseconds), not a benchmark.
const int64_t kMaxSpinNs = 10LL * 1000 * 1000 * 1000;
// Input buffers hold a fixed non-zero pattern: zeros can make real engines run faster than real data.
const int kInputPattern = 0xA5;

const char* sync_name(int mode) {
  if (mode == MLMARK_SYNC_SPIN) return "spin-wait";
  return mode == MLMARK_SYNC_SLEEP ? "sleep (blocking-sync events)" : "blocking (driver busy-waits)";
}

const char* memory_name(int memory, int alloc) {
  if (memory == MLMARK_MEMORY_DEVICE) return "device memory";
  return alloc == MLMARK_ZERO_COPY_MANAGED ? "zero-copy (managed)" : "zero-copy (mapped pinned)";
}

void instantiate(cudaGraphExec_t* exec, cudaGraph_t graph) {
#if CUDART_VERSION >= 12000
  check_cuda(cudaGraphInstantiate(exec, graph, 0), "cudaGraphInstantiate");
#else
  // Before CUDA 12 the call also reported the failing node and a log.
  char log_buffer[512];
  log_buffer[0] = '\0';
  cudaGraphNode_t error_node = nullptr;
  cudaError_t err = cudaGraphInstantiate(exec, graph, &error_node, log_buffer, sizeof(log_buffer));
  if (err != cudaSuccess) {
    log_buffer[sizeof(log_buffer) - 1] = '\0';
    log(MLMARK_LOG_DEBUG, "cudaGraphInstantiate: %s", log_buffer);
  }
  check_cuda(err, "cudaGraphInstantiate");
#endif
}

void make_event(cudaEvent_t* event, unsigned flags) { check_cuda(cudaEventCreateWithFlags(event, flags), "cudaEventCreate"); }

double seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

Loop::Slot::~Slot() {
  // Nothing may still run on the stream when its buffers go; errors here are reported by the run
  // that caused them, so they are only cleared. A held gate would keep the stream busy for ever.
  if (gate) gate->open();
  if (stream) cudaStreamSynchronize(stream);
  if (graph) cudaGraphExecDestroy(graph);
  executor.reset();
  for (int p = 0; p < 2; ++p) {
    if (start[p]) cudaEventDestroy(start[p]);
    if (end[p]) cudaEventDestroy(end[p]);
    if (done[p]) cudaEventDestroy(done[p]);
  }
  buffers.clear();
  staging.clear();
  if (stream) cudaStreamDestroy(stream);
  cudaGetLastError();
}

Loop::Loop(const mlmark_loop_config& c) {
  validate(c);
  device_ = c.device;
  concurrency_ = c.concurrency;
  sync_mode_ = c.sync_mode;
  cuda_graph_ = c.cuda_graph != 0;
  launch_gate_ = c.launch_gate != 0;
  transfers_ = c.transfers != 0;
  zero_copy_alloc_ = c.zero_copy_alloc;

  const DeviceProps props = query_device(device_);  // also makes the device current
  integrated_ = props.integrated;
  concurrent_managed_access_ = props.concurrent_managed_access;
  allow_mapped_host_memory();
  choose_memory(c, props);

  if (c.executor == MLMARK_EXECUTOR_TENSORRT) {
    factory_ = trt::make_engine_factory(c.engine_path);
  } else {
    factory_ = make_spin_factory(c.spin_ns, static_cast<std::size_t>(c.input_bytes),
                                 static_cast<std::size_t>(c.output_bytes));
  }
  // The first executor tells the bindings and then serves stream 0: no execution context is made only to
  // be thrown away (a TensorRT context holds the engine's activation memory).
  std::unique_ptr<Executor> first = factory_->create();
  bindings_ = first->bindings();
  if (cuda_graph_ && !first->capture_safe()) {
    throw Error(MLMARK_ERR_UNSUPPORTED,
                "the " + factory_->name() + " executor cannot be captured into a CUDA graph; run without graphs");
  }
  for (const Binding& b : bindings_) (b.is_input ? input_bytes_ : output_bytes_) += b.bytes;
  check_buffers_fit();

  slots_.reserve(static_cast<std::size_t>(concurrency_));
  for (int i = 0; i < concurrency_; ++i) {
    slots_.push_back(std::unique_ptr<Slot>(new Slot()));
    setup_slot(*slots_.back(), i, i == 0 ? std::move(first) : factory_->create());
  }
  fifo_.assign(static_cast<std::size_t>(concurrency_), nullptr);

  // One untimed inference per stream proves the whole path (module load, graph upload, buffers)
  // now, so a failure is reported by create, not by the first timed run.
  phase(concurrency_, nullptr, nullptr, nullptr, nullptr);

  log(MLMARK_LOG_INFO,
      "loop ready on GPU %d (%s): %d stream(s), wait %s, CUDA graphs %s, launch gate %s, transfers %s, %s, executor %s",
      device_, props.name.c_str(), concurrency_, sync_name(sync_mode_), cuda_graph_ ? "on" : "off",
      launch_gate_ ? "on" : "off", transfers_ ? "on" : "off", memory_name(memory_, zero_copy_alloc_),
      factory_->name().c_str());
}

void Loop::validate(const mlmark_loop_config& c) {
  if (c.concurrency < 1 || c.concurrency > kMaxConcurrency) {
    throw Error(MLMARK_ERR_INVALID_ARGUMENT, "concurrency must be within 1.." + std::to_string(kMaxConcurrency) +
                                                 ", got " + std::to_string(c.concurrency));
  }
  if (c.sync_mode != MLMARK_SYNC_BLOCKING && c.sync_mode != MLMARK_SYNC_SPIN && c.sync_mode != MLMARK_SYNC_SLEEP) {
    throw Error(MLMARK_ERR_INVALID_ARGUMENT, "unknown sync mode " + std::to_string(c.sync_mode));
  }
  if (c.memory != MLMARK_MEMORY_AUTO && c.memory != MLMARK_MEMORY_DEVICE && c.memory != MLMARK_MEMORY_ZERO_COPY) {
    throw Error(MLMARK_ERR_INVALID_ARGUMENT, "unknown memory mode " + std::to_string(c.memory));
  }
  if (c.zero_copy_alloc != MLMARK_ZERO_COPY_MAPPED && c.zero_copy_alloc != MLMARK_ZERO_COPY_MANAGED) {
    throw Error(MLMARK_ERR_INVALID_ARGUMENT, "unknown zero-copy allocation " + std::to_string(c.zero_copy_alloc));
  }
  if (c.executor != MLMARK_EXECUTOR_SPIN && c.executor != MLMARK_EXECUTOR_TENSORRT) {
    throw Error(MLMARK_ERR_INVALID_ARGUMENT, "unknown executor " + std::to_string(c.executor));
  }
  if (c.executor == MLMARK_EXECUTOR_TENSORRT && (!c.engine_path || !*c.engine_path)) {
    throw Error(MLMARK_ERR_INVALID_ARGUMENT, "the TensorRT executor needs engine_path, the engine file to run");
  }
  if (c.executor == MLMARK_EXECUTOR_SPIN && (c.spin_ns < 0 || c.spin_ns > kMaxSpinNs)) {
    throw Error(MLMARK_ERR_INVALID_ARGUMENT, "spin duration must be within 0..10 s, got " + std::to_string(c.spin_ns) + " ns");
  }
}

void Loop::allow_mapped_host_memory() {
  // The scheduling flags (spin, yield or sleep in cudaStreamSynchronize and cudaDeviceSynchronize) belong
  // to the process's primary context, which every loop and any framework in this process share, and a
  // change applies at once to all of them. So no loop touches them, and none needs to, since each wait
  // mode is fixed by the event alone: cudaEventSynchronize busy-waits on a plain event and sleeps on a
  // blocking-sync one whatever the flags (as documented; on an H100 a plain event's wait used a full
  // core under each of the four policies), and spin-wait polls. Only the map-host flag is added where
  // it is missing: mapped zero-copy needed it before unified addressing.
  unsigned flags = 0;
  if (cudaGetDeviceFlags(&flags) != cudaSuccess) {
    cudaGetLastError();
    flags = 0;
  }
  if (!(flags & cudaDeviceMapHost)) {
    const cudaError_t flag_err = cudaSetDeviceFlags(flags | cudaDeviceMapHost);
    if (flag_err != cudaSuccess) {
      cudaGetLastError();
      log(MLMARK_LOG_DEBUG, "device flags left as they were: %s", cudaGetErrorString(flag_err));
    }
  }
}

void Loop::choose_memory(const mlmark_loop_config& c, const DeviceProps& props) {
  memory_ = c.memory;
  if (memory_ == MLMARK_MEMORY_AUTO) memory_ = integrated_ ? MLMARK_MEMORY_ZERO_COPY : MLMARK_MEMORY_DEVICE;
  if (memory_ != MLMARK_MEMORY_ZERO_COPY) return;
  if (!integrated_ && !c.force_zero_copy) {
    throw Error(MLMARK_ERR_UNSUPPORTED, "zero-copy memory is refused on " + props.name +
                                            ", a discrete GPU (its kernels would read host memory over PCIe); "
                                            "use device memory, or force zero-copy to measure it anyway");
  }
  if (zero_copy_alloc_ == MLMARK_ZERO_COPY_MAPPED && !props.can_map_host_memory) {
    throw Error(MLMARK_ERR_UNSUPPORTED, props.name + " cannot map host memory, so mapped zero-copy is unavailable");
  }
  if (zero_copy_alloc_ == MLMARK_ZERO_COPY_MANAGED && !props.managed_memory) {
    throw Error(MLMARK_ERR_UNSUPPORTED, props.name + " has no managed memory, so managed zero-copy is unavailable");
  }
  if (transfers_) {
    log(MLMARK_LOG_INFO, "zero-copy memory: the GPU reads the host buffers directly, so no transfers are timed");
  }
  transfers_ = false;
}

void Loop::check_buffers_fit() const {
  // Refuse what cannot fit before allocating any of it, with the totals in the message.
  const std::size_t per_inference = input_bytes_ + output_bytes_ + bindings_.size();
  const std::size_t total = per_inference * static_cast<std::size_t>(concurrency_);
  const std::string what = std::to_string(concurrency_) + " stream(s) x " + format_bytes(per_inference) + " of buffers";
  if (memory_ == MLMARK_MEMORY_DEVICE) {
    check_fits(MemoryKind::Device, total, what);
    if (transfers_) check_fits(MemoryKind::Pinned, total, what + " (host staging)");
  } else {
    check_fits(zero_copy_alloc_ == MLMARK_ZERO_COPY_MANAGED ? MemoryKind::Managed : MemoryKind::Mapped, total, what);
  }
}

Loop::~Loop() {
  // Destruction may come from another thread than creation; the slots must be freed on their device.
  if (cudaSetDevice(device_) != cudaSuccess) cudaGetLastError();
  drain();
}

void Loop::setup_slot(Slot& s, int number, std::unique_ptr<Executor> executor) {
  check_cuda(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking), "cudaStreamCreate");
  s.executor = std::move(executor);
  const std::string owner = "stream " + std::to_string(number);
  for (const Binding& b : bindings_) {
    const std::string what = "'" + b.name + "' of " + owner;
    if (memory_ == MLMARK_MEMORY_DEVICE) {
      s.buffers.emplace_back(MemoryKind::Device, b.bytes, what);
      if (b.is_input) {
        check_cuda(cudaMemset(s.buffers.back().device(), kInputPattern, b.bytes), "initializing an input");
      }
      if (transfers_) {
        s.staging.emplace_back(MemoryKind::Pinned, b.bytes, what + " (host staging)");
        if (b.is_input) std::memset(s.staging.back().host(), kInputPattern, b.bytes);
      }
    } else {
      const bool managed = zero_copy_alloc_ == MLMARK_ZERO_COPY_MANAGED;
      s.buffers.emplace_back(managed ? MemoryKind::Managed : MemoryKind::Mapped, b.bytes, what);
      // Written while the buffer is still attached to the host, before any stream may use it.
      if (b.is_input) std::memset(s.buffers.back().host(), kInputPattern, b.bytes);
      if (managed) attach_managed(s.buffers.back(), s.stream, device_, concurrent_managed_access_);
    }
    s.pointers.push_back(s.buffers.back().device());
  }
  if (memory_ == MLMARK_MEMORY_DEVICE) check_cuda(cudaDeviceSynchronize(), "initializing buffers");

  // Sleep mode: the event itself asks for an interrupt-driven wait, whatever the scheduling flags.
  const unsigned wait_flag = sync_mode_ == MLMARK_SYNC_SLEEP ? cudaEventBlockingSync : 0u;
  bool has_output_copy = false;
  for (const Binding& b : bindings_) has_output_copy = has_output_copy || (transfers_ && !b.is_input);
  for (int p = 0; p < 2; ++p) {
    make_event(&s.start[p], cudaEventDefault);
    // The loop waits on the last event of an inference: the end event, or the one after the output
    // copies. Only that one needs the wait flag.
    make_event(&s.end[p], has_output_copy ? cudaEventDefault : wait_flag);
    if (has_output_copy) make_event(&s.done[p], cudaEventDisableTiming | wait_flag);
  }
  if (cuda_graph_) {
    std::string why;
    if (!capture_graph(s, &why)) {
      // As trtexec does: say so and run every stream without graphs (never some with and some without).
      graph_fallback_ = "CUDA-graph capture failed on stream " + std::to_string(number) + " (" + why +
                        "); running without CUDA graphs";
      log(MLMARK_LOG_WARNING, "%s executor: %s", factory_->name().c_str(), graph_fallback_.c_str());
      cuda_graph_ = false;
      drop_graphs();
    }
  }
  if (launch_gate_) {
    // One inference ungated first: the executor's first launches may load modules lazily, which can wait
    // for the whole context, TensorRT finishes a context's setup on its first enqueue, and a graph is
    // uploaded on its first launch. None may happen while a gate holds a stream (the host would wait for
    // the gate that waits for the host).
    if (s.graph) {
      check_cuda(cudaGraphLaunch(s.graph, s.stream), "cudaGraphLaunch");
    } else {
      s.executor->enqueue(s.stream, s.pointers.data());
    }
    check_cuda(cudaStreamSynchronize(s.stream), "the inference before the launch gate");
    s.gate.reset(new LaunchGate());
  }
}

bool Loop::capture_graph(Slot& s, std::string* why) {
  // One plain enqueue first: TensorRT finishes a context's lazy setup on its first enqueue (allocations,
  // shape and profile updates), which must not happen inside a capture. A failure here is not the capture's.
  s.executor->enqueue(s.stream, s.pointers.data());
  check_cuda(cudaStreamSynchronize(s.stream), "the inference before graph capture");
  check_cuda(cudaStreamBeginCapture(s.stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
  std::string enqueue_error;
  try {
    s.executor->enqueue(s.stream, s.pointers.data());
  } catch (const std::exception& e) {
    // An engine may hold operations a capture does not permit: its enqueue then fails (TensorRT returns
    // false) or invalidates the capture. The capture is ended whatever happened, or the stream stays unusable.
    enqueue_error = e.what();
  }
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(s.stream, &graph);
  cudaGetLastError();
  if (!enqueue_error.empty() || ended != cudaSuccess || !graph) {
    if (graph) cudaGraphDestroy(graph);
    *why = !enqueue_error.empty() ? "the enqueue failed while capturing: " + enqueue_error
                                  : std::string("cudaStreamEndCapture: ") + cudaGetErrorString(ended);
    return false;
  }
  // Verified before it is trusted: it holds work (an empty graph would time nothing), it instantiates, and
  // one replay runs to completion.
  std::size_t nodes = 0;
  const cudaError_t counted = cudaGraphGetNodes(graph, nullptr, &nodes);
  cudaGetLastError();
  if (counted != cudaSuccess || nodes == 0) {
    cudaGraphDestroy(graph);
    *why = counted != cudaSuccess ? std::string("cudaGraphGetNodes: ") + cudaGetErrorString(counted)
                                  : "the captured graph is empty";
    return false;
  }
  try {
    instantiate(&s.graph, graph);
  } catch (const Error& e) {
    cudaGraphDestroy(graph);
    s.graph = nullptr;
    *why = e.what();
    return false;
  }
  cudaGraphDestroy(graph);
  cudaError_t replay = cudaGraphLaunch(s.graph, s.stream);
  if (replay == cudaSuccess) replay = cudaStreamSynchronize(s.stream);
  cudaGetLastError();
  if (replay != cudaSuccess) {
    cudaGraphExecDestroy(s.graph);
    s.graph = nullptr;
    *why = std::string("replaying the captured graph: ") + cudaGetErrorString(replay);
    return false;
  }
  log(MLMARK_LOG_DEBUG, "stream graph captured: %zu node(s), one replay verified", nodes);
  return true;
}

void Loop::drop_graphs() noexcept {
  for (auto& slot : slots_) {
    if (!slot->graph) continue;
    if (slot->stream) cudaStreamSynchronize(slot->stream);
    cudaGraphExecDestroy(slot->graph);
    slot->graph = nullptr;
  }
  cudaGetLastError();
}

void Loop::issue(Slot& s, int64_t index) {
  const int p = s.parity ^ 1;
  s.parity = p;
  s.index = index;
  s.busy = true;
  s.t0 = Clock::now();
  if (transfers_) {
    for (std::size_t i = 0; i < bindings_.size(); ++i) {
      if (!bindings_[i].is_input) continue;
      check_cuda(cudaMemcpyAsync(s.pointers[i], s.staging[i].host(), bindings_[i].bytes, cudaMemcpyHostToDevice, s.stream),
                 "copying an input to the GPU");
    }
  }
  // Launch gate: the stream waits here until the whole inference is enqueued (the input copies above stay
  // ahead of it, outside the events), so the GPU runs start event, work and end event back to back.
  if (s.gate) s.gate->hold(s.stream);
  try {
    check_cuda(cudaEventRecord(s.start[p], s.stream), "cudaEventRecord");
    if (s.graph) {
      check_cuda(cudaGraphLaunch(s.graph, s.stream), "cudaGraphLaunch");
    } else {
      s.executor->enqueue(s.stream, s.pointers.data());
    }
    check_cuda(cudaEventRecord(s.end[p], s.stream), "cudaEventRecord");
    if (s.done[p]) {
      for (std::size_t i = 0; i < bindings_.size(); ++i) {
        if (bindings_[i].is_input) continue;
        check_cuda(cudaMemcpyAsync(s.staging[i].host(), s.pointers[i], bindings_[i].bytes, cudaMemcpyDeviceToHost,
                                   s.stream),
                   "copying an output from the GPU");
      }
      check_cuda(cudaEventRecord(s.done[p], s.stream), "cudaEventRecord");
    }
  } catch (...) {
    if (s.gate) s.gate->open();  // never leave a stream held
    throw;
  }
  if (s.gate) s.gate->open();
  s.enqueued = Clock::now();
}

void Loop::check_gate(Slot& s) const {
  if (!s.gate || !s.gate->take_expired()) return;
  throw Error(MLMARK_ERR_UNSUPPORTED,
              "the launch gate opened itself after " + std::to_string(LaunchGate::kTimeoutNs / 1000000) +
                  " ms without the host: enqueueing one inference took that long (the " + factory_->name() +
                  " executor waited for the GPU inside its enqueue, or this thread stalled), so its GPU time "
                  "would not be the GPU's alone; run without launch_gate");
}

Loop::Slot* Loop::wait_any(Clock::time_point* finished) {
  if (sync_mode_ != MLMARK_SYNC_SPIN) {
    // One thread cannot wait on several events at once; it waits on the oldest inference. The
    // streams run the same work, so they finish in about issue order, and a later one that finished
    // first is recorded when the loop sees it, as an application with one thread would see it.
    Slot* s = fifo_[fifo_head_];
    fifo_head_ = (fifo_head_ + 1) % fifo_.size();
    check_cuda(cudaEventSynchronize(s->completion()), "waiting for an inference");
    *finished = Clock::now();
    return s;
  }
  const std::size_t n = slots_.size();
  for (;;) {
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t i = (next_poll_ + k) % n;
      Slot* s = slots_[i].get();
      if (!s->busy) continue;
      const cudaError_t q = cudaEventQuery(s->completion());
      if (q == cudaSuccess) {
        *finished = Clock::now();
        next_poll_ = (i + 1) % n;
        return s;
      }
      if (q != cudaErrorNotReady) check_cuda(q, "waiting for an inference");
    }
  }
}

void Loop::phase(int64_t count, double* e2e_s, double* gpu_s, double* enqueue_s, double* wall_s) {
  std::size_t fifo_tail = fifo_head_;
  int64_t issued = 0;
  int64_t completed = 0;
  const Clock::time_point begin = Clock::now();
  Clock::time_point last = begin;
  for (std::size_t i = 0; i < slots_.size() && issued < count; ++i) {
    issue(*slots_[i], issued++);
    fifo_[fifo_tail] = slots_[i].get();
    fifo_tail = (fifo_tail + 1) % fifo_.size();
  }
  while (completed < count) {
    Clock::time_point finished;
    Slot* s = wait_any(&finished);
    check_gate(*s);
    const int64_t index = s->index;
    const int parity = s->parity;
    const Clock::time_point t0 = s->t0;
    const Clock::time_point enqueued = s->enqueued;
    // Refill first: the stream must not idle while the host reads this inference's timings.
    if (issued < count) {
      issue(*s, issued++);
      fifo_[fifo_tail] = s;
      fifo_tail = (fifo_tail + 1) % fifo_.size();
    } else {
      s->busy = false;
    }
    if (e2e_s) e2e_s[index] = seconds(finished - t0);
    if (enqueue_s) enqueue_s[index] = seconds(enqueued - t0);
    if (gpu_s) {
      float ms = 0.0f;
      check_cuda(cudaEventElapsedTime(&ms, s->start[parity], s->end[parity]), "cudaEventElapsedTime");
      gpu_s[index] = static_cast<double>(ms) * 1e-3;
    }
    last = finished;
    ++completed;
  }
  if (wall_s) *wall_s = seconds(last - begin);
}

void Loop::drain() noexcept {
  for (auto& s : slots_) {
    if (s->stream) cudaStreamSynchronize(s->stream);
    s->busy = false;
  }
  fifo_head_ = 0;
  cudaGetLastError();
}

void Loop::set_parameter(const std::string& name, double value) {
  check_cuda(cudaSetDevice(device_), "cudaSetDevice");
  drain();
  for (auto& s : slots_) {
    if (!s->executor->set_parameter(name, value)) {
      throw Error(MLMARK_ERR_UNSUPPORTED, "the " + factory_->name() + " executor has no parameter '" + name + "'");
    }
  }
}

Loop::Slot& Loop::slot_at(int slot) {
  if (slot < 0 || static_cast<std::size_t>(slot) >= slots_.size()) {
    throw Error(MLMARK_ERR_INVALID_ARGUMENT,
                "slot " + std::to_string(slot) + " is out of range: the loop has " + std::to_string(slots_.size()));
  }
  return *slots_[static_cast<std::size_t>(slot)];
}

void Loop::set_input(int slot, int binding, const void* data, std::size_t bytes) {
  if (binding < 0 || static_cast<std::size_t>(binding) >= bindings_.size() ||
      !bindings_[static_cast<std::size_t>(binding)].is_input) {
    throw Error(MLMARK_ERR_INVALID_ARGUMENT, "binding " + std::to_string(binding) + " is not an input of this loop");
  }
  const std::size_t i = static_cast<std::size_t>(binding);
  if (bytes != bindings_[i].bytes) {
    throw Error(MLMARK_ERR_INVALID_ARGUMENT, "input '" + bindings_[i].name + "' takes " + std::to_string(bindings_[i].bytes) +
                                                 " bytes, got " + std::to_string(bytes));
  }
  if (slot != -1) slot_at(slot);  // validates
  check_cuda(cudaSetDevice(device_), "cudaSetDevice");
  if (slot == -1) {
    drain();
  } else {
    sync_slot(slot_at(slot));  // this slot only: another thread may be using another one
  }
  for (std::size_t k = 0; k < slots_.size(); ++k) {
    if (slot != -1 && static_cast<int>(k) != slot) continue;
    Slot& s = *slots_[k];
    if (memory_ == MLMARK_MEMORY_DEVICE) {
      check_cuda(cudaMemcpy(s.buffers[i].device(), data, bytes, cudaMemcpyHostToDevice), "copying an input to the GPU");
      // Timed inferences with transfers copy the staging buffer in: it must hold the same data.
      if (transfers_) std::memcpy(s.staging[i].host(), data, bytes);
    } else {
      // Zero-copy: the GPU reads this host memory; the slot's stream is idle, so the CPU may write it.
      std::memcpy(s.buffers[i].host(), data, bytes);
    }
  }
}

void Loop::infer(int slot, void* const* outputs, int count) {
  if (count < 0 || static_cast<std::size_t>(count) != bindings_.size()) {
    throw Error(MLMARK_ERR_INVALID_ARGUMENT, "infer takes one output pointer per binding (" +
                                                 std::to_string(bindings_.size()) + "), got " + std::to_string(count));
  }
  Slot& s = slot_at(slot);
  check_cuda(cudaSetDevice(device_), "cudaSetDevice");
  sync_slot(s);  // this slot only: other threads may be running inferences on the others
  try {
    if (transfers_) {
      for (std::size_t i = 0; i < bindings_.size(); ++i) {
        if (!bindings_[i].is_input) continue;
        check_cuda(cudaMemcpyAsync(s.pointers[i], s.staging[i].host(), bindings_[i].bytes, cudaMemcpyHostToDevice, s.stream),
                   "copying an input to the GPU");
      }
    }
    if (s.graph) {
      check_cuda(cudaGraphLaunch(s.graph, s.stream), "cudaGraphLaunch");
    } else {
      s.executor->enqueue(s.stream, s.pointers.data());
    }
    if (memory_ == MLMARK_MEMORY_DEVICE) {
      for (std::size_t i = 0; i < bindings_.size(); ++i) {
        if (bindings_[i].is_input || !outputs[i]) continue;
        check_cuda(cudaMemcpyAsync(outputs[i], s.pointers[i], bindings_[i].bytes, cudaMemcpyDeviceToHost, s.stream),
                   "copying an output from the GPU");
      }
    }
    check_cuda(cudaStreamSynchronize(s.stream), "waiting for an inference");
    if (memory_ != MLMARK_MEMORY_DEVICE) {
      for (std::size_t i = 0; i < bindings_.size(); ++i) {
        if (bindings_[i].is_input || !outputs[i]) continue;
        std::memcpy(outputs[i], s.buffers[i].host(), bindings_[i].bytes);
      }
    }
  } catch (...) {
    if (cudaStreamSynchronize(s.stream) != cudaSuccess) cudaGetLastError();
    s.busy = false;
    throw;
  }
}

void Loop::sync_slot(Slot& s) {
  check_cuda(cudaStreamSynchronize(s.stream), "waiting for the slot's work in flight");
  s.busy = false;
}

mlmark_run_info Loop::info() const {
  mlmark_run_info r;
  std::memset(&r, 0, sizeof(r));
  r.struct_size = sizeof(r);
  r.device = device_;
  r.concurrency = concurrency_;
  r.sync_mode = sync_mode_;
  r.cuda_graph = cuda_graph_ ? 1 : 0;
  r.transfers = transfers_ ? 1 : 0;
  r.memory = memory_;
  r.zero_copy_alloc = memory_ == MLMARK_MEMORY_ZERO_COPY ? zero_copy_alloc_ : MLMARK_ZERO_COPY_MAPPED;
  r.integrated = integrated_ ? 1 : 0;
  r.launch_gate = launch_gate_ ? 1 : 0;
  r.input_bytes = input_bytes_;
  r.output_bytes = output_bytes_;
  return r;
}

void Loop::run(int64_t iterations, int64_t warmup, double* e2e_s, double* gpu_s, double* enqueue_s,
               mlmark_run_info* out) {
  if (iterations < 0 || warmup < 0) throw Error(MLMARK_ERR_INVALID_ARGUMENT, "iterations and warmup must be >= 0");
  if (iterations > 0 && (!e2e_s || !gpu_s)) throw Error(MLMARK_ERR_INVALID_ARGUMENT, "result arrays must not be null");
  // The calling thread may differ from the one that created the loop.
  check_cuda(cudaSetDevice(device_), "cudaSetDevice");
  double wall = 0.0;
  try {
    if (warmup > 0) phase(warmup, nullptr, nullptr, nullptr, nullptr);
    if (iterations > 0) phase(iterations, e2e_s, gpu_s, enqueue_s, &wall);
  } catch (...) {
    // Leave the loop reusable after a failed run: nothing in flight, the FIFO empty.
    drain();
    throw;
  }
  if (out) {
    *out = info();
    out->iterations = iterations;
    out->warmup = warmup;
    out->wall_s = wall;
  }
}

}  // namespace mlmark
