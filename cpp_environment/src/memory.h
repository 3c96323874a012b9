// Owning wrappers for the three kinds of memory the loop uses: device, pinned host and managed.
#ifndef MLMARK_MEMORY_H
#define MLMARK_MEMORY_H

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>

namespace mlmark {

enum class MemoryKind { Device, Pinned, Mapped, Managed };

// One allocation; frees itself. host() is the CPU-visible pointer (null for device memory), device()
// the pointer kernels use (the mapped alias for zero-copy host memory).
class Buffer {
 public:
  Buffer() {}
  Buffer(MemoryKind kind, std::size_t bytes, const std::string& what);
  ~Buffer();
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* host() const { return host_; }
  void* device() const { return device_; }
  std::size_t bytes() const { return bytes_; }
  MemoryKind kind() const { return kind_; }

 private:
  void release() noexcept;

  MemoryKind kind_ = MemoryKind::Device;
  std::size_t bytes_ = 0;
  void* host_ = nullptr;
  void* device_ = nullptr;
};

// Refuses, before allocating anything, a request that cannot fit: device memory against what the GPU
// has free, pinned or managed host memory against the machine's RAM. Asking the driver for far too
// much pinned or managed memory can stall the machine instead of failing, so this check comes first.
void check_fits(MemoryKind kind, std::size_t total_bytes, const std::string& what);

// Bind a managed buffer to one stream (only that stream's work touches it, so the CPU may use it while
// other streams run) and, where the device supports it, advise the driver that the CPU owns the pages.
void attach_managed(const Buffer& buffer, cudaStream_t stream, int device, bool concurrent_managed_access);

std::string format_bytes(std::size_t bytes);

}  // namespace mlmark

#endif  // MLMARK_MEMORY_H
