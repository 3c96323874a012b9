// The C ABI: every entry point catches everything, so no exception or abort reaches the caller.
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "cuda_util.h"
#include "log.h"
#include "loop.h"
#include "mlmark/mlmark_c.h"
#include "tensorrt/backend.h"

struct mlmark_loop {
  mlmark::Loop loop;
  explicit mlmark_loop(const mlmark_loop_config& config) : loop(config) {}
};

namespace {

thread_local std::string t_last_error;
thread_local std::string t_json;  // mlmark_trt_inspect_engine's result, valid until the thread's next call

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
    // No context is created here: a process that asks what its GPU is before starting an engine-build child
    // must not hold one (on a 4 GB Jetson two contexts cost hundreds of MiB).
    const mlmark::DeviceProps p = mlmark::device_props(device);
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
    info->total_memory = p.total_memory;
    if (mlmark::device_in_use(device)) {  // free memory needs the context, which then exists already
      mlmark::use_device(device);
      std::size_t free_bytes = 0, total_bytes = 0;
      mlmark::check_cuda(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
      info->free_memory = free_bytes;
    }
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

MLMARK_API int mlmark_loop_binding_count(const mlmark_loop* loop, int32_t* count) {
  return guarded("mlmark_loop_binding_count", [&] {
    require(loop, "loop");
    require(count, "count");
    *count = static_cast<int32_t>(loop->loop.bindings().size());
  });
}

MLMARK_API int mlmark_loop_get_binding(const mlmark_loop* loop, int32_t index, mlmark_binding_info* info) {
  return guarded("mlmark_loop_get_binding", [&] {
    require(loop, "loop");
    require(info, "info");
    check_size(info->struct_size, sizeof(mlmark_binding_info), "mlmark_binding_info");
    const std::vector<mlmark::Binding>& bindings = loop->loop.bindings();
    if (index < 0 || static_cast<std::size_t>(index) >= bindings.size()) {
      throw mlmark::Error(MLMARK_ERR_INVALID_ARGUMENT, "binding index " + std::to_string(index) + " is out of range: the loop has " +
                                                           std::to_string(bindings.size()));
    }
    const mlmark::Binding& b = bindings[static_cast<std::size_t>(index)];
    if (b.name.size() >= sizeof(info->name)) {
      throw mlmark::Error(MLMARK_ERR_UNSUPPORTED, "tensor name longer than " + std::to_string(sizeof(info->name) - 1) + " bytes");
    }
    if (b.shape.size() > MLMARK_MAX_DIMS) {
      throw mlmark::Error(MLMARK_ERR_UNSUPPORTED, "tensor '" + b.name + "' has more than " + std::to_string(MLMARK_MAX_DIMS) + " dimensions");
    }
    std::memset(info, 0, sizeof(*info));
    info->struct_size = sizeof(*info);
    info->index = index;
    info->is_input = b.is_input ? 1 : 0;
    info->dtype = b.dtype;
    if (b.shape.empty()) {
      // An untyped buffer (the spin kernel's): bytes of uint8.
      info->nb_dims = 1;
      info->dims[0] = static_cast<int64_t>(b.bytes);
    } else {
      info->nb_dims = static_cast<int32_t>(b.shape.size());
      for (std::size_t d = 0; d < b.shape.size(); ++d) info->dims[d] = b.shape[d];
    }
    info->bytes = b.bytes;
    std::memcpy(info->name, b.name.c_str(), b.name.size() + 1);
  });
}

MLMARK_API int mlmark_loop_set_input(mlmark_loop* loop, int32_t slot, int32_t binding, const void* data,
                                     uint64_t bytes) {
  return guarded("mlmark_loop_set_input", [&] {
    require(loop, "loop");
    require(data, "data");
    loop->loop.set_input(slot, binding, data, static_cast<std::size_t>(bytes));
  });
}

MLMARK_API int mlmark_loop_infer(mlmark_loop* loop, int32_t slot, void* const* outputs, int32_t count) {
  return guarded("mlmark_loop_infer", [&] {
    require(loop, "loop");
    require(outputs, "outputs");
    loop->loop.infer(slot, outputs, count);
  });
}

MLMARK_API int mlmark_trt_get_info(int32_t device, mlmark_trt_info* info) {
  return guarded("mlmark_trt_get_info", [&] {
    require(info, "info");
    check_size(info->struct_size, sizeof(mlmark_trt_info), "mlmark_trt_info");
    std::memset(info, 0, sizeof(*info));
    info->struct_size = sizeof(*info);
    mlmark::trt::get_info(device, info);
  });
}

MLMARK_API int mlmark_trt_build_engine(const mlmark_trt_build_config* config, mlmark_trt_build_result* result) {
  return guarded("mlmark_trt_build_engine", [&] {
    require(config, "config");
    require(result, "result");
    check_size(config->struct_size, sizeof(mlmark_trt_build_config), "mlmark_trt_build_config");
    check_size(result->struct_size, sizeof(mlmark_trt_build_result), "mlmark_trt_build_result");
    std::memset(result, 0, sizeof(*result));
    result->struct_size = sizeof(*result);
    mlmark::trt::build_engine(*config, result);
  });
}

MLMARK_API int mlmark_trt_inspect_engine(int32_t device, const char* engine_path, const char** json) {
  return guarded("mlmark_trt_inspect_engine", [&] {
    require(engine_path, "engine_path");
    require(json, "json");
    *json = nullptr;
    t_json = mlmark::trt::inspect_engine(device, engine_path);
    *json = t_json.c_str();
  });
}

}  // extern "C"
