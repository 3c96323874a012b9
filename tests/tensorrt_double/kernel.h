// The test double's one GPU kernel: every inference of every engine, whatever the model.
//
// It reads the first bytes of input 0, fills each output with values computed from them (output_value()
// below, which the tests recompute in numpy), and runs for the engine's kernel duration by the GPU's global
// timer, so that streams, events, graphs, the launch gate, memory modes and copies all act on real GPU
// work of a known length. It computes nothing a model computes.
#ifndef TRT_DOUBLE_KERNEL_H
#define TRT_DOUBLE_KERNEL_H

#include <cstdint>

namespace trt_double {

const int kMaxKernelOutputs = 16;
// Bytes of input 0 that the outputs depend on.
const int kSeedBytes = 64;

struct KernelOutput {
  void* data;
  uint64_t count;  // elements
  int32_t dtype;   // nvinfer1::DataType as a number: 0 float, 1 half, 2 int8, 3 int32, 4 bool, 5 uint8, 8 int64
};

// Launches the kernel on stream (a cudaStream_t); returns the launch's cudaError_t as an int (0: launched).
int launch_kernel(void* stream, const void* input0, uint64_t input0_bytes, const KernelOutput* outputs,
                  int n_outputs, int64_t duration_ns);

}  // namespace trt_double

#endif  // TRT_DOUBLE_KERNEL_H
