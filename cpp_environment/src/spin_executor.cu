#include "spin_executor.h"

#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "cuda_util.h"
#include "memory.h"

namespace mlmark {
namespace {

// A duration longer than this is a unit mistake (seconds for nanoseconds), not a benchmark.
const int64_t kMaxSpinNs = 10LL * 1000 * 1000 * 1000;

__device__ __forceinline__ unsigned long long global_timer_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// One thread of one block: the kernel must occupy almost nothing, so that several streams' kernels
// overlap on different SMs and concurrency scaling measures the loop, not the GPU's capacity.
// The duration counts from the kernel's first instruction; the buffer accesses come after the start
// is read, so a slow zero-copy read over PCIe is inside the requested time instead of added to it.
// The duration is read from device memory rather than passed by value, so that it can change between
// runs while a CUDA graph captured with this kernel stays valid; the read comes after the start time.
__global__ void spin_kernel(const unsigned long long* duration, const unsigned char* input,
                            unsigned long long input_bytes, unsigned char* output, unsigned long long output_bytes) {
  const unsigned long long start = global_timer_ns();
  const unsigned long long duration_ns = *duration;
  unsigned char value = 0x5a;
  if (input_bytes > 0) value ^= input[0] ^ input[input_bytes - 1];
  if (output_bytes > 0) {
    output[0] = value;
    output[output_bytes - 1] = value;
  }
  while (global_timer_ns() - start < duration_ns) {
  }
}

class SpinExecutor : public Executor {
 public:
  SpinExecutor(int64_t duration_ns, std::size_t input_bytes, std::size_t output_bytes)
      : duration_(MemoryKind::Device, sizeof(unsigned long long), "the spin duration"),
        input_bytes_(input_bytes),
        output_bytes_(output_bytes) {
    set_duration(duration_ns);
  }

  std::vector<Binding> bindings() const override {
    std::vector<Binding> b;
    b.push_back(Binding{"input", input_bytes_, true});
    b.push_back(Binding{"output", output_bytes_, false});
    return b;
  }

  void enqueue(cudaStream_t stream, void* const* device_buffers) override {
    spin_kernel<<<1, 1, 0, stream>>>(static_cast<const unsigned long long*>(duration_.device()),
                                     static_cast<const unsigned char*>(device_buffers[0]), input_bytes_,
                                     static_cast<unsigned char*>(device_buffers[1]), output_bytes_);
    // Launch errors (bad configuration, no GPU code) surface here; execution errors at the next sync.
    check_cuda(cudaGetLastError(), "launching the spin kernel");
  }

  bool capture_safe() const override { return true; }

  bool set_parameter(const std::string& name, double value) override {
    if (name != "spin_ns") return false;
    if (!(value >= 0.0 && value <= static_cast<double>(kMaxSpinNs))) {
      throw Error(MLMARK_ERR_INVALID_ARGUMENT, "spin duration must be within 0..10 s");
    }
    set_duration(static_cast<int64_t>(value));
    return true;
  }

 private:
  void set_duration(int64_t ns) {
    const unsigned long long value = static_cast<unsigned long long>(ns);
    // Synchronous on purpose: the caller changes it between runs, with nothing in flight.
    check_cuda(cudaMemcpy(duration_.device(), &value, sizeof(value), cudaMemcpyHostToDevice), "setting the spin duration");
  }

  Buffer duration_;
  std::size_t input_bytes_;
  std::size_t output_bytes_;
};

class SpinFactory : public ExecutorFactory {
 public:
  SpinFactory(int64_t duration_ns, std::size_t input_bytes, std::size_t output_bytes)
      : duration_ns_(duration_ns), input_bytes_(input_bytes), output_bytes_(output_bytes) {
    // Fails now, with a hint to rebuild for this GPU, rather than at the first timed launch.
    cudaFuncAttributes attributes;
    check_cuda(cudaFuncGetAttributes(&attributes, spin_kernel), "loading the spin kernel");
  }

  std::string name() const override { return "spin"; }

  std::unique_ptr<Executor> create() override {
    return std::unique_ptr<Executor>(new SpinExecutor(duration_ns_, input_bytes_, output_bytes_));
  }

 private:
  int64_t duration_ns_;
  std::size_t input_bytes_;
  std::size_t output_bytes_;
};

}  // namespace

std::unique_ptr<ExecutorFactory> make_spin_factory(int64_t duration_ns, std::size_t input_bytes,
                                                   std::size_t output_bytes) {
  if (duration_ns < 0 || duration_ns > kMaxSpinNs) {
    throw Error(MLMARK_ERR_INVALID_ARGUMENT, "spin duration must be within 0..10 s");
  }
  return std::unique_ptr<ExecutorFactory>(new SpinFactory(duration_ns, input_bytes, output_bytes));
}

}  // namespace mlmark
