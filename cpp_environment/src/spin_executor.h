// The calibrated GPU workload: a kernel that runs for a requested number of nanoseconds by the GPU's
// global timer. It is what the tests and the self-test measure, since its true duration is known.
#ifndef MLMARK_SPIN_EXECUTOR_H
#define MLMARK_SPIN_EXECUTOR_H

#include <cstddef>
#include <cstdint>
#include <memory>

#include "mlmark/executor.h"

namespace mlmark {

// Factory for spin executors; checks at construction that this library has GPU code for the device.
std::unique_ptr<ExecutorFactory> make_spin_factory(int64_t duration_ns, std::size_t input_bytes,
                                                   std::size_t output_bytes);

}  // namespace mlmark

#endif  // MLMARK_SPIN_EXECUTOR_H
