/*
 * MLMark native library: the C ABI that the Python harness loads with ctypes.
 *
 * Rules of this interface:
 *   - Every function returns an mlmark_status (0 = success) unless it only reads a constant.
 *   - On failure, mlmark_last_error() returns a one-line message for the calling thread; it stays
 *     valid until that thread's next call into the library.
 *   - No C++ exception and no abort crosses this boundary.
 *   - Structs start with struct_size, which the caller sets to sizeof(struct); a mismatch is
 *     refused, so a caller built against another layout fails cleanly instead of corrupting memory.
 *   - MLMARK_ABI_VERSION changes whenever a signature, a struct layout or a constant's meaning
 *     changes; callers check mlmark_abi_version() before anything else.
 *   - A loop handle is used by one thread at a time; different handles may run on different threads. The one
 *     exception: mlmark_loop_infer and mlmark_loop_set_input with a slot >= 0 touch that slot only, so one
 *     thread per slot may call them at once while no other call runs on the loop.
 */
#ifndef MLMARK_C_H
#define MLMARK_C_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define MLMARK_API __declspec(dllexport)
#else
#define MLMARK_API __attribute__((visibility("default")))
#endif

#define MLMARK_ABI_VERSION 2

/* Status codes. */
#define MLMARK_OK 0
#define MLMARK_ERR_INVALID_ARGUMENT 1 /* a bad parameter or struct size */
#define MLMARK_ERR_NO_DRIVER 2        /* no CUDA driver, or one too old for this build */
#define MLMARK_ERR_NO_DEVICE 3        /* no CUDA GPU visible, or the index is out of range */
#define MLMARK_ERR_UNSUPPORTED 4      /* cannot run on this device (no GPU code for it, zero-copy refused, ...) */
#define MLMARK_ERR_OUT_OF_MEMORY 5    /* device, pinned or managed memory exhausted */
#define MLMARK_ERR_CUDA 6             /* any other CUDA error */
#define MLMARK_ERR_INTERNAL 7         /* a bug or an unexpected C++ exception */
#define MLMARK_ERR_MODEL 8            /* a model, engine or calibration file is missing, corrupt or rejected */
#define MLMARK_ERR_TENSORRT 9         /* TensorRT failed (its own message is in the last error) */

/* Log levels of the log callback. */
#define MLMARK_LOG_DEBUG 0
#define MLMARK_LOG_INFO 1
#define MLMARK_LOG_WARNING 2
#define MLMARK_LOG_ERROR 3

/* How the loop's host thread waits for an inference to finish. */
/* The loop never changes the device's scheduling flags: they belong to the whole process. */
#define MLMARK_SYNC_BLOCKING 0 /* cudaEventSynchronize on a plain event: the thread blocks in the call while
                                  the driver busy-waits (as documented for events without the
                                  blocking-sync flag, whatever the scheduling flags) */
#define MLMARK_SYNC_SPIN 1     /* the loop polls cudaEventQuery itself, over all streams */
#define MLMARK_SYNC_SLEEP 2    /* cudaEventSynchronize on a cudaEventBlockingSync event: the thread
                                  sleeps until the GPU's interrupt wakes it (trtexec's default) */

/* Where the inference buffers live. */
#define MLMARK_MEMORY_AUTO 0      /* zero-copy on integrated GPUs, device memory on discrete ones */
#define MLMARK_MEMORY_DEVICE 1    /* cudaMalloc buffers, fed from pinned host staging buffers */
#define MLMARK_MEMORY_ZERO_COPY 2 /* host memory the GPU reads directly */

/* How zero-copy buffers are allocated. */
#define MLMARK_ZERO_COPY_MAPPED 0  /* cudaHostAlloc(cudaHostAllocMapped) */
#define MLMARK_ZERO_COPY_MANAGED 1 /* cudaMallocManaged + cudaStreamAttachMemAsync */

/* Executors the loop can drive. */
#define MLMARK_EXECUTOR_SPIN 0     /* a kernel that runs for a requested number of nanoseconds */
#define MLMARK_EXECUTOR_TENSORRT 1 /* a serialized TensorRT engine (needs a library built with TensorRT) */

/* Element types of a binding: the numbering of TensorRT's nvinfer1::DataType. */
#define MLMARK_DTYPE_FLOAT32 0
#define MLMARK_DTYPE_FLOAT16 1
#define MLMARK_DTYPE_INT8 2
#define MLMARK_DTYPE_INT32 3
#define MLMARK_DTYPE_BOOL 4
#define MLMARK_DTYPE_UINT8 5
#define MLMARK_DTYPE_FP8 6
#define MLMARK_DTYPE_BFLOAT16 7
#define MLMARK_DTYPE_INT64 8
#define MLMARK_DTYPE_INT4 9
#define MLMARK_DTYPE_FP4 10
#define MLMARK_DTYPE_E8M0 11

#define MLMARK_MAX_DIMS 8
#define MLMARK_MAX_NAME 4096 /* TensorRT's own limit on tensor names, terminator included */

/* Engine precisions. */
#define MLMARK_PRECISION_FP32 0
#define MLMARK_PRECISION_FP16 1
#define MLMARK_PRECISION_INT8 2

typedef void (*mlmark_log_fn)(int level, const char* message, void* user);

typedef struct mlmark_loop mlmark_loop; /* opaque */

typedef struct mlmark_device_info {
  uint32_t struct_size;
  int32_t device;
  char name[256];
  int32_t cc_major;
  int32_t cc_minor;
  int32_t integrated;
  int32_t multiprocessors;
  int32_t can_map_host_memory;
  int32_t managed_memory;
  int32_t concurrent_managed_access;
  int32_t driver_version;  /* e.g. 13000 for CUDA 13.0; 0 when no driver is installed */
  int32_t runtime_version; /* the CUDA runtime this library was built with */
  int32_t reserved0;
  uint64_t total_memory;
  uint64_t free_memory; /* 0 until this library has used the device: the query would create a CUDA context */
} mlmark_device_info;

typedef struct mlmark_loop_config {
  uint32_t struct_size;
  int32_t device;
  int32_t concurrency; /* streams (and executor instances) kept in flight by one host thread */
  int32_t sync_mode;   /* MLMARK_SYNC_* */
  int32_t cuda_graph;  /* capture each stream's enqueue once and replay it; a capture that fails (an engine with
                          operations a capture does not permit) or does not verify falls back to plain
                          launches on every stream, with a warning, and mlmark_run_info.cuda_graph says 0 */
  int32_t transfers;   /* copy inputs host->device and outputs device->host per inference */
  int32_t memory;      /* MLMARK_MEMORY_* */
  int32_t force_zero_copy; /* allow zero-copy on a discrete GPU */
  int32_t zero_copy_alloc; /* MLMARK_ZERO_COPY_* */
  int32_t executor;        /* MLMARK_EXECUTOR_* */
  int64_t spin_ns;         /* MLMARK_EXECUTOR_SPIN: the kernel's duration */
  uint64_t input_bytes;    /* MLMARK_EXECUTOR_SPIN: size of its one input */
  uint64_t output_bytes;   /* MLMARK_EXECUTOR_SPIN: size of its one output */
  const char* engine_path; /* MLMARK_EXECUTOR_TENSORRT: the serialized engine file */
  /* Launches behind a launch gate: before each inference's start event the loop enqueues a one-thread
     kernel that waits on a flag in mapped host memory, and sets the flag only after the end event is
     enqueued, so that the GPU runs start event, work and end event back to back and GPU compute time
     excludes the host's launch calls (a CUDA graph's launch call included: the start event is recorded
     before it). The enqueue then no longer overlaps GPU work: for timing GPU compute, not throughput. */
  int32_t launch_gate;
  int32_t reserved0;
} mlmark_loop_config;

/* One input or output tensor of a loop's inferences. */
typedef struct mlmark_binding_info {
  uint32_t struct_size;
  int32_t index;    /* position in the loop's binding order */
  int32_t is_input;
  int32_t dtype;    /* MLMARK_DTYPE_* */
  int32_t nb_dims;
  int32_t reserved0;
  int64_t dims[MLMARK_MAX_DIMS]; /* the shape, batch included */
  uint64_t bytes;                /* one inference's buffer */
  char name[MLMARK_MAX_NAME];
} mlmark_binding_info;

/* What the TensorRT backend of this build can do. */
typedef struct mlmark_trt_info {
  uint32_t struct_size;
  int32_t built_with_tensorrt; /* 0: the library was built without TensorRT; nothing below is filled */
  int32_t implicit_int8;       /* INT8 from a calibration table (calibrators: TensorRT < 10.1) */
  int32_t inspector;           /* IEngineInspector can report layer precisions */
  int32_t progress_monitor;    /* builds report phases through IProgressMonitor (TensorRT >= 10) */
  int32_t weak_typing;         /* the builder takes FP16/INT8 flags (TensorRT < 11; 11 is strongly typed) */
  int32_t fast_fp16;           /* this GPU runs FP16 fast */
  int32_t fast_int8;           /* this GPU runs INT8 fast */
  int32_t fast_from_builder;   /* 0: the two above come from the compute capability (asking IBuilder would
                                  create a CUDA context and a builder in the calling process) */
  int32_t test_double;         /* 1: linked against MLMark's TensorRT test double (tests/tensorrt_double), not
                                  TensorRT: nothing it measures is a TensorRT result */
  char header_version[32];     /* TensorRT headers this library was compiled against, e.g. "8.5.2" */
  char runtime_version[32];    /* libnvinfer loaded now (getInferLibVersion), e.g. "8.5.2" */
} mlmark_trt_info;

/* An engine build: ONNX in, serialized engine out. */
typedef struct mlmark_trt_build_config {
  uint32_t struct_size;
  int32_t device;
  const char* onnx_path;
  const char* engine_path;       /* written whole or not at all; the caller renames it into place */
  const char* calibration_table; /* INT8 with implicit quantization only; NULL otherwise */
  const char* timing_cache;      /* loaded when present, saved after the build (temp file + rename); NULL: none */
  int32_t precision;             /* MLMARK_PRECISION_* */
  int32_t batch;                 /* the engine's fixed batch */
  int64_t workspace_mb;          /* builder workspace limit, MiB */
  int32_t detailed_profiling;    /* build with ProfilingVerbosity::kDETAILED, so the inspector sees precisions */
  int32_t reserved0;
} mlmark_trt_build_config;

typedef struct mlmark_trt_build_result {
  uint32_t struct_size;
  int32_t timing_cache_loaded; /* an existing timing cache was used */
  int32_t timing_cache_saved;
  int32_t reserved0;
  double build_s;        /* parse, build and serialization */
  uint64_t engine_bytes;
} mlmark_trt_build_result;

/* What a loop actually uses (after 'auto' is resolved) and what a run measured. */
typedef struct mlmark_run_info {
  uint32_t struct_size;
  int32_t device;
  int32_t concurrency;
  int32_t sync_mode;
  int32_t cuda_graph;
  int32_t transfers;
  int32_t memory; /* MLMARK_MEMORY_DEVICE or MLMARK_MEMORY_ZERO_COPY */
  int32_t zero_copy_alloc;
  int32_t integrated;
  int32_t reserved0;
  int64_t iterations;
  int64_t warmup;
  uint64_t input_bytes;  /* all input bindings of one inference */
  uint64_t output_bytes; /* all output bindings of one inference */
  double wall_s;         /* first timed enqueue to last timed completion */
  int32_t launch_gate;   /* the loop's launches wait behind a launch gate (mlmark_loop_config.launch_gate) */
  int32_t reserved1;
} mlmark_run_info;

/* Library identity: read before anything else. */
MLMARK_API int mlmark_abi_version(void);
MLMARK_API const char* mlmark_source_hash(void);
MLMARK_API const char* mlmark_build_info(void);

/* The calling thread's last error message ("" when none). */
MLMARK_API const char* mlmark_last_error(void);

/* Route log messages at min_level or above to fn (NULL: warnings and errors go to stderr). */
MLMARK_API void mlmark_set_log_callback(mlmark_log_fn fn, void* user, int min_level);

/* Number of CUDA GPUs; fails with NO_DRIVER or NO_DEVICE and a clear message when there is none. */
MLMARK_API int mlmark_device_count(int32_t* count);
/* Properties of one GPU; creates no CUDA context (free_memory stays 0 until the library has used the GPU). */
MLMARK_API int mlmark_get_device_info(int32_t device, mlmark_device_info* info);

/* Create a loop: streams, executors, buffers and graphs are all prepared here, none in run. */
MLMARK_API int mlmark_loop_create(const mlmark_loop_config* config, mlmark_loop** loop);
/* The settings the loop resolved; run fields are zero. */
MLMARK_API int mlmark_loop_get_info(const mlmark_loop* loop, mlmark_run_info* info);
/*
 * Run warmup untimed inferences, then iterations timed ones. In issue order, for the i-th timed
 * inference, in seconds: e2e_s[i] its end-to-end latency (host steady clock, from before its first
 * enqueue call to the host seeing it complete), gpu_s[i] its GPU compute time (CUDA events around the
 * executor's work), enqueue_s[i] (may be NULL) the host time its enqueue calls took. Each array holds
 * at least iterations doubles. info (may be NULL) receives the settings and the wall time.
 */
MLMARK_API int mlmark_loop_run(mlmark_loop* loop, int64_t iterations, int64_t warmup, double* e2e_s,
                               double* gpu_s, double* enqueue_s, mlmark_run_info* info);
/*
 * Change a parameter of a calibrated workload between runs, on every stream, keeping captured graphs
 * valid: "spin_ns" for MLMARK_EXECUTOR_SPIN. UNSUPPORTED for an executor without that parameter.
 */
MLMARK_API int mlmark_loop_set_parameter(mlmark_loop* loop, const char* name, double value);
MLMARK_API int mlmark_loop_destroy(mlmark_loop* loop);

/* The loop's inputs and outputs, in the order the functions below index them. */
MLMARK_API int mlmark_loop_binding_count(const mlmark_loop* loop, int32_t* count);
MLMARK_API int mlmark_loop_get_binding(const mlmark_loop* loop, int32_t index, mlmark_binding_info* info);
/*
 * Copy bytes of host data (exactly the binding's size) into input binding of one slot (a stream and its
 * buffers), or of every slot when slot is -1, so that later runs read real data. Waits for work in flight.
 */
MLMARK_API int mlmark_loop_set_input(mlmark_loop* loop, int32_t slot, int32_t binding, const void* data,
                                     uint64_t bytes);
/*
 * One synchronous inference on a slot, through the same path as a timed one (transfers, graph), reading
 * the slot's inputs; outputs[i] (count = binding count) receives output binding i, NULL skips it.
 */
MLMARK_API int mlmark_loop_infer(mlmark_loop* loop, int32_t slot, void* const* outputs, int32_t count);

/* TensorRT. Without TensorRT in the build, mlmark_trt_get_info succeeds with built_with_tensorrt = 0 and the
 * others fail with MLMARK_ERR_UNSUPPORTED. mlmark_trt_get_info creates no CUDA context and no builder. */
MLMARK_API int mlmark_trt_get_info(int32_t device, mlmark_trt_info* info);
MLMARK_API int mlmark_trt_build_engine(const mlmark_trt_build_config* config, mlmark_trt_build_result* result);
/*
 * IEngineInspector's JSON for every layer of an engine file; *json stays valid until the calling thread's
 * next call into the library.
 */
MLMARK_API int mlmark_trt_inspect_engine(int32_t device, const char* engine_path, const char** json);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MLMARK_C_H */
