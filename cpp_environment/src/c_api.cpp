// The C ABI: every entry point catches everything, so no exception or abort reaches the caller.
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "cuda_util.h"
#include "log.h"
#include "loop.h"
#include "mlmark/mlmark_c.h"

struct mlmark_loop {
  mlmark::Loop loop;
  explicit mlmark_loop(const mlmark_loop_config& config) : loop(config) {}
};

namespace {

thread_local std::string t_last_error;

int fail(int status, const std::string& message) {
  t_last_error = message;
  // One line: the Python side shows this text as is.
  for (char& c : t_last_error) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  mlmark::log(MLMARK_LOG_DEBUG, "returning status %d: %s", status, t_last_error.c_str());
  return status;
}

// Runs body, turning any exception into a status and the thread's last error.
template <typename F>
int guarded(const char* where, F body) {
  try {
    t_last_error.clear();
    body();
    return MLMARK_OK;
  } catch (const mlmark::Error& e) {
    return fail(e.status(), e.what());
  } catch (const std::bad_alloc&) {
    return fail(MLMARK_ERR_OUT_OF_MEMORY, std::string(where) + ": out of host memory");
  } catch (const std::exception& e) {
    return fail(MLMARK_ERR_INTERNAL, std::string(where) + ": internal error: " + e.what());
  } catch (...) {
    return fail(MLMARK_ERR_INTERNAL, std::string(where) + ": internal error: unknown exception");
  }
}

void check_size(uint32_t got, std::size_t expected, const char* what) {
  if (got != expected) {
    throw mlmark::Error(MLMARK_ERR_INVALID_ARGUMENT, std::string(what) + ".struct_size is " + std::to_string(got) +
                                                         ", this library expects " + std::to_string(expected) +
                                                         ": caller and library disagree on the ABI");
  }
}

void require(const void* p, const char* what) {
  if (!p) throw mlmark::Error(MLMARK_ERR_INVALID_ARGUMENT, std::string(what) + " must not be NULL");
}

}  // namespace

extern "C" {

MLMARK_API const char* mlmark_last_error(void) { return t_last_error.c_str(); }

MLMARK_API void mlmark_set_log_callback(mlmark_log_fn fn, void* user, int min_level) {
  try {
    mlmark::set_log_callback(fn, user, min_level);
  } catch (...) {
    // A mutex failure is the only way here; logging then simply keeps its old target.
  }
}

MLMARK_API int mlmark_device_count(int32_t* count) {
  return guarded("mlmark_device_count", [&] {
    require(count, "count");
    *count = 0;
    *count = mlmark::require_devices();
  });
}

MLMARK_API int mlmark_get_device_info(int32_t device, mlmark_device_info* info) {
  return guarded("mlmark_get_device_info", [&] {
    require(info, "info");
    check_size(info->struct_size, sizeof(mlmark_device_info), "mlmark_device_info");
    const mlmark::DeviceProps p = mlmark::query_device(device);
    std::memset(info, 0, sizeof(*info));
    info->struct_size = sizeof(*info);
    info->device = device;
    std::strncpy(info->name, p.name.c_str(), sizeof(info->name) - 1);
    info->cc_major = p.cc_major;
    info->cc_minor = p.cc_minor;
    info->integrated = p.integrated ? 1 : 0;
    info->multiprocessors = p.multiprocessors;
    info->can_map_host_memory = p.can_map_host_memory ? 1 : 0;
    info->managed_memory = p.managed_memory ? 1 : 0;
    info->concurrent_managed_access = p.concurrent_managed_access ? 1 : 0;
    info->driver_version = mlmark::driver_version();
    info->runtime_version = mlmark::runtime_version();
    std::size_t free_bytes = 0, total_bytes = 0;
    mlmark::check_cuda(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
    info->total_memory = total_bytes;
    info->free_memory = free_bytes;
  });
}

MLMARK_API int mlmark_loop_create(const mlmark_loop_config* config, mlmark_loop** loop) {
  return guarded("mlmark_loop_create", [&] {
    require(config, "config");
    require(loop, "loop");
    *loop = nullptr;
    check_size(config->struct_size, sizeof(mlmark_loop_config), "mlmark_loop_config");
    *loop = new mlmark_loop(*config);
  });
}

MLMARK_API int mlmark_loop_get_info(const mlmark_loop* loop, mlmark_run_info* info) {
  return guarded("mlmark_loop_get_info", [&] {
    require(loop, "loop");
    require(info, "info");
    check_size(info->struct_size, sizeof(mlmark_run_info), "mlmark_run_info");
    *info = loop->loop.info();
  });
}

MLMARK_API int mlmark_loop_run(mlmark_loop* loop, int64_t iterations, int64_t warmup, double* e2e_s, double* gpu_s,
                               double* enqueue_s, mlmark_run_info* info) {
  return guarded("mlmark_loop_run", [&] {
    require(loop, "loop");
    if (info) check_size(info->struct_size, sizeof(mlmark_run_info), "mlmark_run_info");
    loop->loop.run(iterations, warmup, e2e_s, gpu_s, enqueue_s, info);
  });
}

MLMARK_API int mlmark_loop_set_parameter(mlmark_loop* loop, const char* name, double value) {
  return guarded("mlmark_loop_set_parameter", [&] {
    require(loop, "loop");
    require(name, "name");
    loop->loop.set_parameter(name, value);
  });
}

MLMARK_API int mlmark_loop_destroy(mlmark_loop* loop) {
  return guarded("mlmark_loop_destroy", [&] { delete loop; });
}

}  // extern "C"
