"""PyTorch target: the workload's ONNX file converted to a torch module, run eager, as CUDA graphs or compiled.

On a GPU, stage() puts the batch on the device once (untimed, like trtexec --noDataTransfers unless
params.transfers is "included"); run() enqueues on its slot's CUDA stream and synchronizes that
stream before it returns, so the harness's host clock covers all the work. Concurrency is one CUDA
stream per slot (and, in cuda-graph mode, one captured graph per slot).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from core.errors import TargetUnavailable
from core.specs import TensorSpec, onnx_io
from targets.base import Capabilities, LoadRequest, Session, Target
from targets.options import TargetOptions, boolean, choice, integer, option
from targets.pytorch.convert import convert_onnx, import_onnx2torch, import_torch, move, onnx2torch_version

log = logging.getLogger("mlmark.pytorch")

EXEC_MODES = ("eager", "cuda-graph", "compile")
TRANSFERS = ("excluded", "included")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# torch.compile modes that record CUDA graphs themselves, per thread: one slot only.
_SELF_GRAPHING = ("reduce-overhead", "max-autotune")
_GRAPH_WARMUP = 3  # eager runs on a side stream before capture (cuDNN picks its algorithms here)

# torch's own intra-op thread count, read once, so that a task without params.threads gets it back
# after a task that set it (the setting is process-wide).
_DEFAULT_THREADS: List[int] = []


class SetupError(ValueError):
    """A task the target cannot set up (compile or capture failed, a mode that needs a GPU on the CPU).

    Not an MLMarkError on purpose: the harness prefixes the task that hit it.
    """


def _dtype(torch: Any, precision: str) -> Any:
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def _cpu_supports(torch: Any, kind: str) -> bool:
    # Native bf16/fp16 arithmetic on the CPU (AVX512-BF16, AMX, AVX512-FP16); without it torch
    # emulates them, slower than fp32, which no one would benchmark on purpose.
    try:
        return bool(getattr(torch.ops.mkldnn, "_is_mkldnn_{}_supported".format(kind))())
    except Exception:  # older torch without the query, or no oneDNN
        return False


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


class TorchSession(Session):
    """A converted model on one device, with `concurrency` slots (a CUDA stream each on the GPU)."""

    def __init__(self, torch: Any, module: Any, specs: List[TensorSpec], output_names: List[str], device: Any,
                 dtype: Any, channels_last: bool, info: Dict[str, Any]) -> None:
        self._torch = torch
        self._module = module  # eager module or compiled callable
        self._specs = specs
        self._outputs = list(output_names)
        self._device = device
        self._dtype = dtype
        self._channels_last = channels_last
        self._gpu = device.type == "cuda"
        self._include_transfers = False
        self._streams: List[Any] = []
        self._side_streams = False
        self._graphs: List[Any] = []
        self._static_in: List[Tuple[Any, ...]] = []
        self._static_out: List[Tuple[Any, ...]] = []
        self._bound: List[Any] = []
        self._host_out: List[Tuple[Any, ...]] = []
        self._impl: Callable[[int, Any], Sequence[Any]] = self._not_loaded
        self.info = info

    # -- the Session interface -------------------------------------------------------------------

    def input_specs(self) -> List[TensorSpec]:
        return list(self._specs)

    def output_names(self) -> List[str]:
        return list(self._outputs)

    def stage(self, inputs: Mapping[str, np.ndarray]) -> Any:
        """The batch as tensors in the run precision and layout: on the device, or pinned on the host."""
        torch = self._torch
        staged = []
        for spec in self._specs:
            t = self._as_tensor(inputs[spec.name])
            if self._gpu:
                t = t.pin_memory() if self._include_transfers else t.to(self._device)
            staged.append(t)
        if self._gpu:
            torch.cuda.synchronize(self._device)  # staging is untimed: nothing of it may leak into run()
        return tuple(staged)

    def run(self, slot: int, inputs: Any) -> Sequence[Any]:
        return self._impl(slot, inputs)  # replaced on the instance by _install() at load

    def to_host(self, outputs: Sequence[Any]) -> List[np.ndarray]:
        torch = self._torch
        result = []
        for t in outputs:
            if t.is_floating_point() and t.dtype != torch.float32:
                t = t.float()  # numpy has no bf16, and post-processing expects float32
            result.append(t.cpu().numpy() if t.device.type != "cpu" else t.numpy())
        return result

    def close(self) -> None:
        self._graphs, self._static_in, self._static_out, self._host_out, self._bound = [], [], [], [], []
        self._module = None
        self._impl = self.run = self._not_loaded  # type: ignore[method-assign]  # drops the closure's references
        if self._gpu:
            self._torch.cuda.empty_cache()

    # -- run() variants, chosen once at load -----------------------------------------------------

    def _install(self) -> None:
        """Make run() one closure for this session's mode and slot count.

        The harness calls run() in its timed loop; a closure over local names spares every
        inference the attribute lookups and branches a general method would repeat, which at
        batch 1 under a CUDA graph is a measurable share of a 0.3 ms inference.
        """
        torch = self._torch
        module, inference = self._module, torch.inference_mode
        if not self._gpu:
            def run(slot: int, staged: Any) -> Sequence[Any]:
                with inference():
                    return module(*staged)
        elif self._include_transfers:
            run = self._run_with_transfers
        elif self._graphs:
            replays = [g.replay for g in self._graphs]
            syncs = [s.synchronize for s in self._streams]
            outs, bound, bind = self._static_out, self._bound, self._bind
            if not self._side_streams:
                replay, sync, out = replays[0], syncs[0], outs[0]

                def run(slot: int, staged: Any) -> Sequence[Any]:
                    if staged is not bound[0]:
                        bind(0, staged)
                    replay()
                    sync()
                    return out
            else:
                streams, on_stream = self._streams, torch.cuda.stream

                def run(slot: int, staged: Any) -> Sequence[Any]:
                    if staged is not bound[slot]:
                        bind(slot, staged)
                    with on_stream(streams[slot]):
                        replays[slot]()
                    syncs[slot]()
                    return outs[slot]
        elif not self._side_streams:
            sync = self._streams[0].synchronize

            def run(slot: int, staged: Any) -> Sequence[Any]:
                with inference():
                    out = module(*staged)
                sync()
                return out
        else:
            streams, on_stream = self._streams, torch.cuda.stream

            def run(slot: int, staged: Any) -> Sequence[Any]:
                stream = streams[slot]
                with on_stream(stream), inference():
                    out = module(*staged)
                stream.synchronize()
                return out
        self._impl = run
        self.run = run  # type: ignore[method-assign]  # the harness looks run up on the instance

    def _run_with_transfers(self, slot: int, staged: Any) -> Sequence[Any]:
        torch, stream = self._torch, self._streams[slot]
        with torch.cuda.stream(stream), torch.inference_mode():
            for dst, src in zip(self._static_in[slot], staged):
                dst.copy_(src, non_blocking=True)
            if self._graphs:
                self._graphs[slot].replay()
                out = self._static_out[slot]
            else:
                out = self._module(*self._static_in[slot])
            host = self._host_out[slot]
            for dst, src in zip(host, out):
                dst.copy_(src, non_blocking=True)
        stream.synchronize()
        return host

    def _not_loaded(self, slot: int, staged: Any) -> Sequence[Any]:
        raise RuntimeError("the session is not set up, or already closed")

    def _bind(self, slot: int, staged: Any) -> None:
        """Copy a newly staged batch into the slot's graph inputs (once per batch, not per run)."""
        torch = self._torch
        with torch.cuda.stream(self._streams[slot]):
            for dst, src in zip(self._static_in[slot], staged):
                dst.copy_(src)
        self._streams[slot].synchronize()
        self._bound[slot] = staged

    # -- set-up helpers used by the target ------------------------------------------------------

    def _as_tensor(self, array: np.ndarray) -> Any:
        torch = self._torch
        t = torch.from_numpy(np.ascontiguousarray(array))
        if t.is_floating_point():
            t = t.to(self._dtype)
        if self._channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def example(self, shapes: Mapping[str, Sequence[int]]) -> Tuple[Any, ...]:
        """Random (never zero) device inputs of the session's shapes, for load-time runs and capture."""
        torch = self._torch
        gen = torch.Generator().manual_seed(0)
        xs = []
        for spec in self._specs:
            shape = list(shapes[spec.name])
            if np.dtype(spec.dtype).kind == "f":
                t = torch.randn(shape, generator=gen).to(self._dtype)
            else:
                t = torch.randint(0, 256, shape, generator=gen).to(getattr(torch, np.dtype(spec.dtype).name))
            if self._channels_last and t.dim() == 4:
                t = t.contiguous(memory_format=torch.channels_last)
            xs.append(t.to(self._device))
        return tuple(xs)


@dataclass(frozen=True)
class PyTorchOptions(TargetOptions):
    """pytorch's task params (targets/pytorch/README.md says more)."""

    exec_mode: str = option("eager", choice(*EXEC_MODES))
    #: H2D copy of the input and D2H of the outputs in every inference, or neither
    transfers: str = option("excluded", choice(*TRANSFERS))
    compile_mode: str = option("default", choice(*COMPILE_MODES))  # torch.compile's mode
    channels_last: bool = option(False, boolean())  # NHWC memory format for 4-D tensors
    allow_fallback: bool = option(False, boolean())  # run eager when compile or capture fails (recorded)
    cudnn_benchmark: bool = option(True, boolean())  # let cuDNN time its algorithms
    tf32: Optional[bool] = option(None, boolean())  # TF32 for fp32 convs and matmuls; None: torch's defaults
    threads: Optional[int] = option(None, integer(1, 1024, allow_none=True))  # CPU intra-op threads


class PyTorchTarget(Target):
    """PyTorch on the CPU or a CUDA GPU, in fp32, fp16 or bf16."""

    name = "pytorch"
    install_hint = "pip install torch onnx2torch"
    Options = PyTorchOptions

    def check_installed(self) -> None:
        import_torch()
        import_onnx2torch()

    def capabilities(self) -> Capabilities:
        torch = import_torch()
        cpu = ["fp32"] + [p for p, kind in (("fp16", "fp16"), ("bf16", "bf16")) if _cpu_supports(torch, kind)]
        precisions = {"cpu": tuple(cpu)}
        if torch.cuda.is_available():
            gpu = ["fp32", "fp16"]
            if torch.cuda.get_device_capability() >= (8, 0):
                gpu.append("bf16")
            precisions["gpu"] = tuple(gpu)
        return Capabilities(precisions=precisions)

    def unsupported_hint(self, hardware: str) -> str:
        """Why gpu, or bf16 on it, is missing here."""
        torch = import_torch()
        if hardware == "gpu":
            if not torch.cuda.is_available():
                if not torch.version.cuda:
                    return " (this torch {} is a CPU-only build: install a CUDA build of torch)".format(
                        torch.__version__)
                return " (torch {} was built for CUDA {} but sees no GPU: check the driver and " \
                       "CUDA_VISIBLE_DEVICES)".format(torch.__version__, torch.version.cuda)
            major, minor = torch.cuda.get_device_capability()
            if (major, minor) < (8, 0):
                return " ({} has compute capability {}.{}; bf16 needs 8.0 or newer)".format(
                    torch.cuda.get_device_name(), major, minor)
        if hardware == "cpu":
            return " (fp16 and bf16 on the CPU need native support: AVX512-FP16, AVX512-BF16 or AMX)"
        return ""

    def versions(self) -> Dict[str, str]:
        torch = import_torch()
        v = {"torch": torch.__version__, "onnx2torch": onnx2torch_version()}
        if torch.version.cuda:
            v["cuda"] = str(torch.version.cuda)
            v["cudnn"] = str(torch.backends.cudnn.version())
        return v

    def load(self, request: LoadRequest) -> Session:
        torch = import_torch()
        opts = PyTorchOptions.parse(request.options, "target pytorch")
        mode = opts.exec_mode
        gpu = request.hardware == "gpu"
        if gpu and not torch.cuda.is_available():
            raise TargetUnavailable("target pytorch: hardware gpu needs CUDA, which torch {} does not see{}".format(
                torch.__version__, self.unsupported_hint("gpu")))
        if mode == "cuda-graph" and not gpu:
            raise SetupError("exec_mode cuda-graph needs hardware gpu (CUDA graphs exist only on a GPU); "
                             "use eager or compile on the cpu")
        if opts.transfers == "included" and not gpu:
            raise SetupError("params.transfers applies to hardware gpu only (on the cpu there is nothing to copy)")
        compile_mode = opts.compile_mode
        if mode == "compile" and compile_mode in _SELF_GRAPHING and request.concurrency > 1:
            raise SetupError("compile_mode {} records CUDA graphs per thread and runs one slot only; use "
                             "exec_mode cuda-graph for concurrency {}".format(compile_mode, request.concurrency))
        device = torch.device("cuda", torch.cuda.current_device()) if gpu else torch.device("cpu")
        dtype = _dtype(torch, request.precision)
        channels_last = opts.channels_last

        specs = onnx_io(request.model_path)[0]
        missing = [s.name for s in specs if s.name not in request.input_shapes]
        if missing:
            raise SetupError("the load request gives no shape for input(s) {}".format(", ".join(missing)))
        shapes = {s.name: list(request.input_shapes[s.name]) for s in specs}
        converted = convert_onnx(request.model_path, shapes)
        info: Dict[str, Any] = {}
        info.update(self._configure(torch, gpu, opts))
        # torch.compile fuses the bias add into its own kernels; the swap would only stand in its way.
        module, retargeted = move(converted, device, dtype, channels_last, bias_kernel=mode != "compile")
        session = TorchSession(torch, module, specs, converted.output_names, device, dtype, channels_last, info)
        info.update(_device_info(torch, device))
        info.update({"precision": str(dtype).replace("torch.", ""), "exec_mode_requested": mode,
                     "channels_last": channels_last, "batch": request.batch, "slots": request.concurrency})
        info.update(converted.info)
        if retargeted:
            info["casts_retargeted"] = retargeted
        example = session.example(shapes)
        out = _first_run(torch, module, example, gpu)
        if len(out) != len(converted.output_names):
            raise SetupError("the converted model returns {} outputs, the ONNX graph has {}".format(
                len(out), len(converted.output_names)))

        if gpu:
            n = request.concurrency
            session._side_streams = n > 1
            session._streams = [torch.cuda.Stream(device) for _ in range(n)] if n > 1 else \
                [torch.cuda.current_stream(device)]
            session._include_transfers = opts.transfers == "included"
        run_mode = mode
        try:
            if mode == "compile":
                session._module = _compile(torch, module, compile_mode, example, gpu)
                info["compile_mode"] = compile_mode
            elif mode == "cuda-graph":
                _capture(torch, session, example)
        except SetupError as exc:
            if not opts.allow_fallback:
                raise SetupError("{}; set params.allow_fallback to true to run eager instead".format(exc)) from exc
            log.warning("pytorch: %s; running eager instead, because params.allow_fallback is true", exc)
            info["fallback"] = "{} -> eager: {}".format(mode, exc)
            session._module, session._graphs = module, []
            run_mode = "eager"
        info["exec_mode"] = run_mode

        if gpu:
            if session._include_transfers:
                _transfer_buffers(torch, session, example, out)
            info["transfers"] = ("included: H2D copy of the input and D2H copy of the outputs in every inference"
                                 if session._include_transfers else
                                 "excluded: the input is staged on the device once, outputs stay there")
            info["streams"] = ("{} CUDA streams, one per slot".format(request.concurrency) if session._side_streams
                               else "the default CUDA stream")
            info["cuda_graphs"] = len(session._graphs)
            info["sync"] = "the slot's stream is synchronized before run() returns"
        else:
            info["slots_share"] = "torch's intra-op pool of {} thread(s)".format(torch.get_num_threads())
        session._install()
        log.info("pytorch: %s %s on %s, exec_mode %s%s", request.workload, info["precision"], info["device_name"],
                 run_mode, ", channels_last" if channels_last else "")
        return session

    @staticmethod
    def _configure(torch: Any, gpu: bool, opts: PyTorchOptions) -> Dict[str, Any]:
        """Process-wide torch settings, set explicitly for every task so that none leaks into the next."""
        if not _DEFAULT_THREADS:
            _DEFAULT_THREADS.append(torch.get_num_threads())
        torch.set_num_threads(int(opts.threads or _DEFAULT_THREADS[0]))
        info: Dict[str, Any] = {"threads": torch.get_num_threads()}
        if gpu:
            torch.backends.cudnn.benchmark = opts.cudnn_benchmark
            tf32 = opts.tf32
            # torch's defaults: TF32 for cuDNN convolutions on, for matmuls off.
            torch.backends.cudnn.allow_tf32 = True if tf32 is None else bool(tf32)
            torch.backends.cuda.matmul.allow_tf32 = False if tf32 is None else bool(tf32)
            info.update({"cudnn_benchmark": torch.backends.cudnn.benchmark,
                         "tf32_conv": torch.backends.cudnn.allow_tf32,
                         "tf32_matmul": torch.backends.cuda.matmul.allow_tf32})
        return info


def _device_info(torch: Any, device: Any) -> Dict[str, Any]:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {"device": str(device), "device_name": props.name,
                "compute_capability": "{}.{}".format(props.major, props.minor)}
    from system.info import cpu_model

    return {"device": "cpu", "device_name": cpu_model()}


def _first_run(torch: Any, module: Any, example: Tuple[Any, ...], gpu: bool) -> Tuple[Any, ...]:
    """One eager run at load: proves the conversion and gives the outputs' shapes and dtypes."""
    try:
        with torch.inference_mode():
            out = module(*example)
        if gpu:
            torch.cuda.synchronize()
    except Exception as exc:
        raise SetupError("the converted model failed its first run: {}".format(_first_line(exc))) from exc
    return tuple(out)


def _compile(torch: Any, module: Any, compile_mode: str, example: Tuple[Any, ...], gpu: bool) -> Any:
    """torch.compile the module and run it twice, so that compilation happens here and not in timed runs."""
    if not hasattr(torch, "compile"):
        raise SetupError("exec_mode compile needs torch 2.0 or newer (this is {})".format(torch.__version__))
    try:
        compiled = torch.compile(module, mode=compile_mode, dynamic=False)
        with torch.inference_mode():
            for _ in range(2):
                compiled(*example)
        if gpu:
            torch.cuda.synchronize()
    except Exception as exc:
        raise SetupError("torch.compile failed: {}".format(_first_line(exc))) from exc
    return compiled


def _capture(torch: Any, session: TorchSession, example: Tuple[Any, ...]) -> None:
    """One CUDA graph per slot, each with its own static inputs and outputs."""
    module = session._module
    try:
        for _ in range(len(session._streams)):
            static_in = tuple(x.clone() for x in example)  # clone keeps the memory format
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.inference_mode():
                for _ in range(_GRAPH_WARMUP):
                    module(*static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(graph):
                static_out = tuple(module(*static_in))
            session._graphs.append(graph)
            session._static_in.append(static_in)
            session._static_out.append(static_out)
            session._bound.append(None)
        torch.cuda.synchronize()
    except Exception as exc:
        session._graphs, session._static_in, session._static_out, session._bound = [], [], [], []
        raise SetupError("CUDA graph capture failed: {}".format(_first_line(exc))) from exc


def _transfer_buffers(torch: Any, session: TorchSession, example: Tuple[Any, ...], out: Tuple[Any, ...]) -> None:
    """Per-slot device inputs and pinned host outputs for transfers 'included'."""
    n = len(session._streams)
    if not session._graphs:
        session._static_in = [tuple(x.clone() for x in example) for _ in range(n)]
    session._host_out = [tuple(torch.empty(o.shape, dtype=o.dtype, pin_memory=True) for o in out)
                         for _ in range(n)]
