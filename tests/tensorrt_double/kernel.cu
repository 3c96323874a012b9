#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernel.h"

namespace trt_double {
namespace {

struct Args {
  const unsigned char* input0;
  unsigned long long input0_bytes;
  KernelOutput outputs[kMaxKernelOutputs];
  int n_outputs;
  unsigned long long duration_ns;
};

__device__ __forceinline__ unsigned long long timer_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Element i of output k for a seed: a hash folded into [-0.5, 0). Never positive, so that no detection
// score passes a threshold and host post-processing (NMS) stays cheap. tests/tensorrt_double/outputs.py holds
// the same function in numpy; keep the two in step.
__device__ __forceinline__ float output_value(unsigned int seed, unsigned long long i, int k) {
  unsigned int h = static_cast<unsigned int>(i) * 2654435761u;
  h ^= seed * 40503u;
  h ^= static_cast<unsigned int>(k + 1) * 2246822519u;
  h ^= h >> 15;
  return -static_cast<float>(h % 2000u + 1u) / 4000.0f;
}

__global__ void double_kernel(Args a) {
  __shared__ unsigned int seed;
  unsigned long long start = 0;
  if (threadIdx.x == 0) {
    start = timer_ns();
    unsigned int s = 0x5au;
    const unsigned long long n = a.input0_bytes < kSeedBytes ? a.input0_bytes : kSeedBytes;
    for (unsigned long long i = 0; i < n; ++i) s = s * 31u + a.input0[i];
    seed = s;
  }
  __syncthreads();
  const unsigned long long stride = static_cast<unsigned long long>(gridDim.x) * blockDim.x;
  const unsigned long long first = static_cast<unsigned long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int k = 0; k < a.n_outputs; ++k) {
    const KernelOutput& o = a.outputs[k];
    for (unsigned long long i = first; i < o.count; i += stride) {
      const float v = output_value(seed, i, k);
      switch (o.dtype) {
        case 0:
          static_cast<float*>(o.data)[i] = v;
          break;
        case 1:
          static_cast<__half*>(o.data)[i] = __float2half(v);
          break;
        case 2:
          static_cast<signed char*>(o.data)[i] = static_cast<signed char>(v * 250.0f);  // within -125..0
          break;
        case 3:
          static_cast<int*>(o.data)[i] = static_cast<int>(v * 4000.0f);
          break;
        case 8:
          static_cast<long long*>(o.data)[i] = static_cast<long long>(v * 4000.0f);
          break;
        default:  // bool, uint8
          static_cast<unsigned char*>(o.data)[i] = static_cast<unsigned char>(v > -0.25f ? 1 : 0);
          break;
      }
    }
  }
  // One thread holds the kernel for its duration, counted from its first instruction, as the native
  // library's calibrated spin kernel does; the others have written the outputs meanwhile.
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    while (timer_ns() - start < a.duration_ns) {
    }
  }
}

}  // namespace

int launch_kernel(void* stream, const void* input0, uint64_t input0_bytes, const KernelOutput* outputs,
                  int n_outputs, int64_t duration_ns) {
  if (n_outputs < 0 || n_outputs > kMaxKernelOutputs) return static_cast<int>(cudaErrorInvalidValue);
  Args a;
  a.input0 = static_cast<const unsigned char*>(input0);
  a.input0_bytes = input0 ? input0_bytes : 0;
  unsigned long long most = 0;
  for (int k = 0; k < n_outputs; ++k) {
    a.outputs[k] = outputs[k];
    if (outputs[k].count > most) most = outputs[k].count;
  }
  a.n_outputs = n_outputs;
  a.duration_ns = static_cast<unsigned long long>(duration_ns > 0 ? duration_ns : 0);
  // Up to 32 blocks of 256 threads: outputs of a few MiB are written well within a typical duration, and
  // several streams' kernels still fit on the GPU together.
  unsigned long long blocks = (most + 4095) / 4096;
  if (blocks < 1) blocks = 1;
  if (blocks > 32) blocks = 32;
  double_kernel<<<static_cast<unsigned int>(blocks), 256, 0, static_cast<cudaStream_t>(stream)>>>(a);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace trt_double
