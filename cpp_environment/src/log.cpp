#include "log.h"

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <mutex>

namespace mlmark {
namespace {

// The callback and its user pointer change together, so they sit behind one mutex; the level is read
// on every log() call and so is a separate atomic.
std::mutex g_mutex;
mlmark_log_fn g_fn = nullptr;
void* g_user = nullptr;
std::atomic<int> g_min_level(MLMARK_LOG_WARNING);

}  // namespace

void set_log_callback(mlmark_log_fn fn, void* user, int min_level) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_fn = fn;
  g_user = user;
  g_min_level.store(fn ? min_level : MLMARK_LOG_WARNING);
}

bool log_enabled(int level) { return level >= g_min_level.load(); }

void log(int level, const char* format, ...) {
  if (!log_enabled(level)) return;
  char buffer[1024];
  va_list args;
  va_start(args, format);
  std::vsnprintf(buffer, sizeof(buffer), format, args);
  va_end(args);
  mlmark_log_fn fn;
  void* user;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    fn = g_fn;
    user = g_user;
  }
  // Called outside the lock: the callback may take its own locks (Python's GIL) and must not
  // deadlock against a thread that is registering a new callback.
  if (fn) {
    fn(level, buffer, user);
  } else {
    static const char* const names[] = {"debug", "info", "warning", "error"};
    const char* name = (level >= 0 && level <= 3) ? names[level] : "log";
    std::fprintf(stderr, "mlmark native %s: %s\n", name, buffer);
  }
}

}  // namespace mlmark
