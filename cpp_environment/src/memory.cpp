#include "memory.h"

#include <unistd.h>

#include <cstdio>
#include <string>

#include "cuda_util.h"
#include "log.h"

namespace mlmark {
namespace {

const char* kind_name(MemoryKind kind) {
  switch (kind) {
    case MemoryKind::Device:
      return "GPU";
    case MemoryKind::Pinned:
      return "pinned host";
    case MemoryKind::Mapped:
      return "mapped (zero-copy) host";
    case MemoryKind::Managed:
      return "managed";
  }
  return "?";
}

std::size_t physical_memory() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return 0;
  return static_cast<std::size_t>(pages) * static_cast<std::size_t>(page);
}

std::string out_of_memory(MemoryKind kind, std::size_t bytes, const std::string& what, std::size_t available,
                          const char* available_what) {
  return std::string("out of ") + kind_name(kind) + " memory: " + what + " needs " + format_bytes(bytes) + " but " +
         format_bytes(available) + " " + available_what + "; lower the concurrency or the buffer sizes";
}

}  // namespace

std::string format_bytes(std::size_t bytes) {
  char buf[64];
  const double b = static_cast<double>(bytes);
  if (b >= 1024.0 * 1024.0 * 1024.0) {
    std::snprintf(buf, sizeof(buf), "%.2f GiB", b / (1024.0 * 1024.0 * 1024.0));
  } else if (b >= 1024.0 * 1024.0) {
    std::snprintf(buf, sizeof(buf), "%.1f MiB", b / (1024.0 * 1024.0));
  } else if (b >= 1024.0) {
    std::snprintf(buf, sizeof(buf), "%.1f KiB", b / 1024.0);
  } else {
    std::snprintf(buf, sizeof(buf), "%zu bytes", bytes);
  }
  return buf;
}

void check_fits(MemoryKind kind, std::size_t total_bytes, const std::string& what) {
  if (kind == MemoryKind::Device || kind == MemoryKind::Managed) {
    std::size_t free_bytes = 0, total = 0;
    check_cuda(cudaMemGetInfo(&free_bytes, &total), "cudaMemGetInfo");
    if (total_bytes > free_bytes) {
      throw Error(MLMARK_ERR_OUT_OF_MEMORY, out_of_memory(kind, total_bytes, what, free_bytes, "are free on the GPU"));
    }
  }
  if (kind != MemoryKind::Device) {
    // Half the RAM: page-locking more than that starves the OS long before the driver says no.
    const std::size_t ram = physical_memory();
    if (ram != 0 && total_bytes > ram / 2) {
      throw Error(MLMARK_ERR_OUT_OF_MEMORY, out_of_memory(kind, total_bytes, what, ram / 2, "(half the RAM) may be locked"));
    }
  }
}

Buffer::Buffer(MemoryKind kind, std::size_t bytes, const std::string& what) : kind_(kind), bytes_(bytes) {
  // Zero-sized bindings still get a real allocation so that every binding pointer is valid.
  const std::size_t size = bytes == 0 ? 1 : bytes;
  const std::string context = "allocating " + format_bytes(size) + " of " + kind_name(kind) + " memory for " + what;
  cudaError_t err = cudaSuccess;
  switch (kind) {
    case MemoryKind::Device:
      err = cudaMalloc(&device_, size);
      break;
    case MemoryKind::Pinned:
      err = cudaHostAlloc(&host_, size, cudaHostAllocDefault);
      break;
    case MemoryKind::Mapped:
      err = cudaHostAlloc(&host_, size, cudaHostAllocMapped | cudaHostAllocPortable);
      if (err == cudaSuccess) {
        err = cudaHostGetDevicePointer(&device_, host_, 0);
        if (err != cudaSuccess) {
          cudaGetLastError();
          release();
        }
      }
      break;
    case MemoryKind::Managed:
      // Attached to the host until attach_managed() binds it to its stream.
      err = cudaMallocManaged(&device_, size, cudaMemAttachHost);
      host_ = device_;
      break;
  }
  if (err != cudaSuccess) {
    host_ = nullptr;
    device_ = nullptr;
    if (status_for(err) == MLMARK_ERR_OUT_OF_MEMORY) {
      cudaGetLastError();
      throw Error(MLMARK_ERR_OUT_OF_MEMORY, "out of " + std::string(kind_name(kind)) + " memory: " + context +
                                                " failed; lower the concurrency or the buffer sizes");
    }
    check_cuda(err, context.c_str());
  }
}

Buffer::~Buffer() { release(); }

Buffer::Buffer(Buffer&& other) noexcept
    : kind_(other.kind_), bytes_(other.bytes_), host_(other.host_), device_(other.device_) {
  other.host_ = nullptr;
  other.device_ = nullptr;
  other.bytes_ = 0;
}

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    release();
    kind_ = other.kind_;
    bytes_ = other.bytes_;
    host_ = other.host_;
    device_ = other.device_;
    other.host_ = nullptr;
    other.device_ = nullptr;
    other.bytes_ = 0;
  }
  return *this;
}

void Buffer::release() noexcept {
  cudaError_t err = cudaSuccess;
  switch (kind_) {
    case MemoryKind::Device:
    case MemoryKind::Managed:
      if (device_) err = cudaFree(device_);
      break;
    case MemoryKind::Pinned:
    case MemoryKind::Mapped:
      if (host_) err = cudaFreeHost(host_);
      break;
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    log(MLMARK_LOG_DEBUG, "freeing %s memory: %s", kind_name(kind_), cudaGetErrorString(err));
  }
  host_ = nullptr;
  device_ = nullptr;
}

void attach_managed(const Buffer& buffer, cudaStream_t stream, int device, bool concurrent_managed_access) {
  check_cuda(cudaStreamAttachMemAsync(stream, buffer.device(), 0, cudaMemAttachSingle), "cudaStreamAttachMemAsync");
  if (!concurrent_managed_access) return;  // hints and prefetch need concurrent managed access
  const std::size_t size = buffer.bytes() == 0 ? 1 : buffer.bytes();
  // Keep the pages where the CPU writes them and let the GPU map them, which is what zero-copy means;
  // the hints are advice, so a refusal is logged, not fatal.
#if CUDART_VERSION >= 13000
  cudaMemLocation cpu;
  cpu.type = cudaMemLocationTypeHost;
  cpu.id = 0;
  cudaMemLocation gpu;
  gpu.type = cudaMemLocationTypeDevice;
  gpu.id = device;
  cudaError_t err = cudaMemAdvise(buffer.device(), size, cudaMemAdviseSetPreferredLocation, cpu);
  if (err == cudaSuccess) err = cudaMemAdvise(buffer.device(), size, cudaMemAdviseSetAccessedBy, gpu);
  if (err == cudaSuccess) err = cudaMemPrefetchAsync(buffer.device(), size, cpu, 0, stream);
#else
  cudaError_t err = cudaMemAdvise(buffer.device(), size, cudaMemAdviseSetPreferredLocation, cudaCpuDeviceId);
  if (err == cudaSuccess) err = cudaMemAdvise(buffer.device(), size, cudaMemAdviseSetAccessedBy, device);
  if (err == cudaSuccess) err = cudaMemPrefetchAsync(buffer.device(), size, cudaCpuDeviceId, stream);
#endif
  if (err != cudaSuccess) {
    cudaGetLastError();
    log(MLMARK_LOG_DEBUG, "managed-memory hints not applied: %s", cudaGetErrorString(err));
  }
}

}  // namespace mlmark
