// Library logging: messages go to the callback the host registered (Python's logging), else stderr.
#ifndef MLMARK_LOG_H
#define MLMARK_LOG_H

#include "mlmark/mlmark_c.h"

namespace mlmark {

void set_log_callback(mlmark_log_fn fn, void* user, int min_level);

// True when a message at level would be delivered, so callers can skip formatting.
bool log_enabled(int level);

// printf-style; never throws.
void log(int level, const char* format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

}  // namespace mlmark

#endif  // MLMARK_LOG_H
