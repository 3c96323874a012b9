// A launch gate holds a stream until the host has enqueued all of an inference's work, so that the
// CUDA events around that work time the GPU alone. Without it the GPU reaches the start event while
// the host is still inside the launch call, and the event interval includes that call and its jitter.
//
// The gate is a one-thread kernel that polls a flag in mapped (zero-copy) host memory until the flag
// reaches the gate's sequence number; on an integrated GPU that is the memory CPU and GPU share. A
// stream held by a gate runs nothing else, so every gate must be opened: on every path out of the
// enqueue (errors included) and before its stream is destroyed. The host must not wait for the GPU
// between hold() and open() (a synchronizing call, or a kernel whose lazy module load synchronizes the
// context): that would wait for the gate, which waits for the host. As a last resort against such a
// deadlock the kernel gives up after kTimeoutNs and says so (take_expired()).
#ifndef MLMARK_LAUNCH_GATE_H
#define MLMARK_LAUNCH_GATE_H

#include <cuda_runtime.h>

namespace mlmark {

class LaunchGate {
 public:
  // How long a held gate waits for the host before it opens itself: far beyond any enqueue, far below
  // what a user would take for a hang.
  static const unsigned long long kTimeoutNs = 1000ULL * 1000 * 1000;

  LaunchGate();  // the flag in mapped pinned host memory, and the kernel loaded (no lazy load later)
  ~LaunchGate();
  LaunchGate(const LaunchGate&) = delete;
  LaunchGate& operator=(const LaunchGate&) = delete;

  // Enqueue on stream the kernel that waits for the next sequence number; work enqueued after it runs
  // only once open() is called. Throws Error when the launch fails (then nothing is held).
  void hold(cudaStream_t stream);
  // Let the held stream run: publish the sequence number after everything enqueued before this call.
  // Safe to call when nothing is held; never throws, so that error paths and destructors can always
  // release a stream.
  void open() noexcept;
  // True (once, then cleared) when a gate kernel gave up waiting for the host after kTimeoutNs.
  bool take_expired() noexcept;

 private:
  // host_[0]: the sequence number the host has released; host_[1]: written by a gate that expired.
  volatile unsigned int* host_ = nullptr;
  unsigned int* device_ = nullptr;
  unsigned int sequence_ = 0;
  bool held_ = false;
};

}  // namespace mlmark

#endif  // MLMARK_LAUNCH_GATE_H
