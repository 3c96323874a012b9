// A launch gate holds a stream until the host has enqueued all of an inference's work, so that the
// CUDA events around that work time the GPU alone. Without it the GPU reaches the start event while
// the host is still inside the launch call, and the event interval includes that call and its jitter.
#ifndef MLMARK_LAUNCH_GATE_H
#define MLMARK_LAUNCH_GATE_H

#include <cuda_runtime.h>

namespace mlmark {

class LaunchGate {
 public:
  LaunchGate();  // a flag in mapped pinned host memory, read by the GPU
  ~LaunchGate();
  LaunchGate(const LaunchGate&) = delete;
  LaunchGate& operator=(const LaunchGate&) = delete;

  // Enqueue on stream a one-thread kernel that waits until open() is called; work enqueued after it
  // starts only then.
  void hold(cudaStream_t stream);
  // Let the held stream run. Safe to call when nothing is held; never throws, so that error paths and
  // destructors can always release a stream (a gate left shut would spin until the process ends).
  void open() noexcept;

 private:
  volatile unsigned int* host_ = nullptr;
  unsigned int* device_ = nullptr;
  unsigned int ticket_ = 0;
  bool held_ = false;
};

}  // namespace mlmark

#endif  // MLMARK_LAUNCH_GATE_H
