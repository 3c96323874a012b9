#include "cuda_util.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace mlmark {
namespace {

// Numeric values, not enumerator names: several of these enumerators are missing from older
// toolkits (CUDA 10.2 on JetPack 4.6), and the numbers are stable across CUDA releases.
const int kErrMemoryAllocation = 2;
const int kErrInitialization = 3;
const int kErrStubLibrary = 34;
const int kErrInsufficientDriver = 35;
const int kErrCallRequiresNewerDriver = 36;
const int kErrDevicesUnavailable = 46;
const int kErrInvalidDeviceFunction = 98;
const int kErrNoDevice = 100;
const int kErrInvalidDevice = 101;
const int kErrNoKernelImage = 209;
const int kErrJitCompilerNotFound = 221;
const int kErrUnsupportedPtxVersion = 222;
const int kErrSystemNotReady = 802;
const int kErrSystemDriverMismatch = 803;
const int kErrCompatNotSupported = 804;

// Devices use_device() made current in this process, as bits (a machine has far fewer than 64 GPUs).
std::atomic<unsigned long long> g_devices_in_use(0);

void check_index(int device, int count) {
  if (device < 0 || device >= count) {
    throw Error(MLMARK_ERR_NO_DEVICE,
                "GPU index " + std::to_string(device) + " is out of range: " + std::to_string(count) + " visible");
  }
}

}  // namespace

int status_for(cudaError_t err) {
  switch (static_cast<int>(err)) {
    case 0:
      return MLMARK_OK;
    case kErrMemoryAllocation:
      return MLMARK_ERR_OUT_OF_MEMORY;
    case kErrInitialization:
    case kErrStubLibrary:
    case kErrInsufficientDriver:
    case kErrCallRequiresNewerDriver:
    case kErrSystemNotReady:
    case kErrSystemDriverMismatch:
    case kErrCompatNotSupported:
      return MLMARK_ERR_NO_DRIVER;
    case kErrNoDevice:
    case kErrInvalidDevice:
    case kErrDevicesUnavailable:
      return MLMARK_ERR_NO_DEVICE;
    case kErrInvalidDeviceFunction:
    case kErrNoKernelImage:
    case kErrJitCompilerNotFound:
    case kErrUnsupportedPtxVersion:
      return MLMARK_ERR_UNSUPPORTED;
    default:
      return MLMARK_ERR_CUDA;
  }
}

void check_cuda(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  // A failed call also sets the runtime's last error; clear it so that a later, unrelated launch
  // check does not report this one again (sticky errors stay regardless, as they must).
  cudaGetLastError();
  std::string message = std::string(what) + ": " + cudaGetErrorString(err) + " (" + cudaGetErrorName(err) + ")";
  int status = status_for(err);
  if (status == MLMARK_ERR_UNSUPPORTED && (static_cast<int>(err) == kErrNoKernelImage ||
                                           static_cast<int>(err) == kErrInvalidDeviceFunction)) {
    message += "; this library has GPU code for sm " + std::string(built_cuda_archs()) +
               " only: rebuild it with -DMLMARK_CUDA_ARCHS=<this GPU's sm, e.g. 87>";
  }
  throw Error(status, message);
}

int driver_version() {
  int v = 0;
  if (cudaDriverGetVersion(&v) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return v;
}

int runtime_version() {
  int v = 0;
  if (cudaRuntimeGetVersion(&v) != cudaSuccess) {
    cudaGetLastError();
    return CUDART_VERSION;
  }
  return v;
}

std::string version_string(int cuda_version) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%d.%d", cuda_version / 1000, (cuda_version % 1000) / 10);
  return buf;
}

int require_devices() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaSuccess && count > 0) return count;
  cudaGetLastError();
  const int drv = driver_version();
  const int rt = runtime_version();
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  std::string visible_note;
  if (visible) visible_note = std::string(" (CUDA_VISIBLE_DEVICES='") + visible + "')";
  if (err == cudaSuccess || static_cast<int>(err) == kErrNoDevice) {
    throw Error(MLMARK_ERR_NO_DEVICE, "no CUDA GPU is visible" + visible_note);
  }
  if (drv == 0) {
    throw Error(MLMARK_ERR_NO_DRIVER,
                "no NVIDIA CUDA driver is installed (libcuda.so could not be loaded): this machine cannot run "
                "CUDA (" + std::string(cudaGetErrorName(err)) + ")");
  }
  if (static_cast<int>(err) == kErrInsufficientDriver || drv < rt) {
    throw Error(MLMARK_ERR_NO_DRIVER,
                "the NVIDIA driver supports CUDA " + version_string(drv) + " but this library was built with CUDA " +
                    version_string(rt) + ": update the driver or rebuild the library with an older CUDA toolkit");
  }
  throw Error(status_for(err) == MLMARK_ERR_CUDA ? MLMARK_ERR_NO_DRIVER : status_for(err),
              std::string("CUDA cannot be initialized: ") + cudaGetErrorString(err) + " (" + cudaGetErrorName(err) +
                  ")" + visible_note);
}

void use_device(int device) {
  check_index(device, require_devices());
  check_cuda(cudaSetDevice(device), "cudaSetDevice");
  if (device < 64) g_devices_in_use.fetch_or(1ULL << device);
}

bool device_in_use(int device) { return device >= 0 && device < 64 && ((g_devices_in_use.load() >> device) & 1ULL) != 0; }

DeviceProps query_device(int device) {
  use_device(device);
  return device_props(device);
}

DeviceProps device_props(int device) {
  // Device queries by index only: cudaGetDeviceProperties and cudaDeviceGetAttribute need no context.
  check_index(device, require_devices());
  DeviceProps p;
  cudaDeviceProp prop;
  check_cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  prop.name[sizeof(prop.name) - 1] = '\0';
  p.name = prop.name;
  p.total_memory = prop.totalGlobalMem;
  // Attributes rather than cudaDeviceProp fields: the attribute enum is stable across CUDA 10-13,
  // while the struct has lost fields between releases.
  int v = 0;
  check_cuda(cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute");
  p.cc_major = v;
  check_cuda(cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMinor, device), "cudaDeviceGetAttribute");
  p.cc_minor = v;
  check_cuda(cudaDeviceGetAttribute(&v, cudaDevAttrIntegrated, device), "cudaDeviceGetAttribute");
  p.integrated = v != 0;
  check_cuda(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  p.multiprocessors = v;
  check_cuda(cudaDeviceGetAttribute(&v, cudaDevAttrCanMapHostMemory, device), "cudaDeviceGetAttribute");
  p.can_map_host_memory = v != 0;
  check_cuda(cudaDeviceGetAttribute(&v, cudaDevAttrManagedMemory, device), "cudaDeviceGetAttribute");
  p.managed_memory = v != 0;
  check_cuda(cudaDeviceGetAttribute(&v, cudaDevAttrConcurrentManagedAccess, device), "cudaDeviceGetAttribute");
  p.concurrent_managed_access = v != 0;
  return p;
}

}  // namespace mlmark
