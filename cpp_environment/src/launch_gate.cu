#include "launch_gate.h"

#include <atomic>

#include "cuda_util.h"

namespace mlmark {
namespace {

// One thread polls the host's flag over the bus; the unsigned difference keeps the comparison right
// when the ticket counter wraps.
__global__ void gate_kernel(const volatile unsigned int* flag, unsigned int ticket) {
  while (static_cast<int>(*flag - ticket) < 0) {
  }
}

}  // namespace

LaunchGate::LaunchGate() {
  void* host = nullptr;
  check_cuda(cudaHostAlloc(&host, sizeof(unsigned int), cudaHostAllocMapped), "allocating a launch gate");
  host_ = static_cast<volatile unsigned int*>(host);
  *host_ = 0;
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
  // The caller synchronizes the stream before the gate goes; only the memory is left to free.
  cudaFreeHost(const_cast<unsigned int*>(host_));
}

void LaunchGate::hold(cudaStream_t stream) {
  ++ticket_;
  gate_kernel<<<1, 1, 0, stream>>>(device_, ticket_);
  check_cuda(cudaGetLastError(), "launching the launch gate");
  held_ = true;
}

void LaunchGate::open() noexcept {
  if (!held_) return;
  *host_ = ticket_;
  // Drain the store to memory now rather than whenever the CPU's write buffer would.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  held_ = false;
}

}  // namespace mlmark
