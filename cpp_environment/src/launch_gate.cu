#include "launch_gate.h"

#include <atomic>

#include "cuda_util.h"

namespace mlmark {
namespace {

__device__ __forceinline__ unsigned long long gate_timer_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// One thread polls the host's flag (volatile: every read goes to the host memory, none is cached);
// the signed difference keeps the comparison right when the sequence number wraps. flag[1] tells the
// host that the gate gave up waiting.
__global__ void gate_kernel(volatile unsigned int* flag, unsigned int sequence, unsigned long long timeout_ns) {
  const unsigned long long start = gate_timer_ns();
  while (static_cast<int>(flag[0] - sequence) < 0) {
    if (gate_timer_ns() - start > timeout_ns) {
      flag[1] = 1u;
      __threadfence_system();
      return;
    }
  }
}

}  // namespace

const unsigned long long LaunchGate::kTimeoutNs;

LaunchGate::LaunchGate() {
  // Load the kernel now: under lazy module loading its first launch would load it, and a load may wait
  // for the whole context, including another stream's gate.
  cudaFuncAttributes attributes;
  check_cuda(cudaFuncGetAttributes(&attributes, gate_kernel), "loading the launch gate kernel");
  void* host = nullptr;
  check_cuda(cudaHostAlloc(&host, 2 * sizeof(unsigned int), cudaHostAllocMapped), "allocating a launch gate");
  host_ = static_cast<volatile unsigned int*>(host);
  host_[0] = 0;
  host_[1] = 0;
  void* device = nullptr;
  const cudaError_t err = cudaHostGetDevicePointer(&device, host, 0);
  if (err != cudaSuccess) {
    cudaFreeHost(host);
    check_cuda(err, "mapping a launch gate");
  }
  device_ = static_cast<unsigned int*>(device);
}

LaunchGate::~LaunchGate() {
  open();
  // The owner synchronizes the stream before the gate goes; only the memory is left to free.
  cudaFreeHost(const_cast<unsigned int*>(host_));
}

void LaunchGate::hold(cudaStream_t stream) {
  ++sequence_;
  gate_kernel<<<1, 1, 0, stream>>>(device_, sequence_, kTimeoutNs);
  // Counted as held whatever the launch reported: opening a gate that never ran is harmless, leaving
  // one shut is not.
  held_ = true;
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    open();
    check_cuda(err, "launching the launch gate");
  }
}

void LaunchGate::open() noexcept {
  if (!held_) return;
  // The store stays after the enqueue calls that returned before it (the compiler may not move it up).
  std::atomic_thread_fence(std::memory_order_release);
  host_[0] = sequence_;
  // And the store leaves the CPU's write buffer now, not whenever the buffer would drain.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  held_ = false;
}

bool LaunchGate::take_expired() noexcept {
  if (host_[1] == 0) return false;
  host_[1] = 0;
  return true;
}

}  // namespace mlmark
