// CUDA error handling and device queries shared by the loop, the executors and the C ABI.
#ifndef MLMARK_CUDA_UTIL_H
#define MLMARK_CUDA_UTIL_H

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>

#include "mlmark/executor.h"

namespace mlmark {

// The MLMARK_ERR_* status a CUDA error maps to.
int status_for(cudaError_t err);

// Throws Error(status_for(err), "<what>: <CUDA's message> (<name>)") unless err is cudaSuccess.
// Clears the runtime's last error first, so a recoverable failure (an allocation) does not linger.
void check_cuda(cudaError_t err, const char* what);

// Throws a clear NO_DRIVER / NO_DEVICE error when CUDA cannot be used at all; returns the GPU count.
int require_devices();

// Validates the index and makes it current for this thread. From CUDA 12 on this creates the device's
// primary context (hundreds of MiB on a 4 GB Jetson), so only code that is about to use the GPU calls it.
void use_device(int device);

// True once use_device() has made this device current in this process (its context then exists).
bool device_in_use(int device);

struct DeviceProps {
  std::string name;
  int cc_major;
  int cc_minor;
  bool integrated;
  int multiprocessors;
  bool can_map_host_memory;
  bool managed_memory;
  bool concurrent_managed_access;
  std::size_t total_memory;
};

// The device's properties without making it current or creating a context: for questions asked before
// any GPU work (what can this GPU run?), e.g. by a process that is about to start a build child.
DeviceProps device_props(int device);

// use_device() and device_props(): for code that is about to use the device.
DeviceProps query_device(int device);

// Driver and runtime versions as CUDA encodes them (1000 * major + 10 * minor); 0 if unknown.
int driver_version();
int runtime_version();
std::string version_string(int cuda_version);

// The architectures this library carries GPU code for, e.g. "75;80;86;87;89;90".
const char* built_cuda_archs();

}  // namespace mlmark

#endif  // MLMARK_CUDA_UTIL_H
