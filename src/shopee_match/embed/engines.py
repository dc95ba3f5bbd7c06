"""Inference engines for the encoders: torch eager, or onnxruntime on the CPU.

``ENGINE = "auto"`` runs onnxruntime on the CPU when it is installed (about 2-3x torch eager
on a laptop CPU, same vectors to ~1e-5) and torch on CUDA/MPS; ``"torch"`` and ``"onnx"`` force
one. A machine without onnxruntime falls back to torch with a one-line notice.

A model's ONNX graph is exported once (``torch.onnx.export``, dynamic batch axis, and a dynamic
sequence axis for text) per weights identity and input shape, and kept under
``artifacts/onnx/<key>.onnx`` (or ``$SHOPEE_MATCH_ONNX``); an ``int8`` variant (onnxruntime
dynamic quantization, weights per channel) beside it. fp32 graphs give the same vectors as
torch, so the embedding cache does not depend on the engine; int8 vectors differ and are
cached apart. An int8 graph runs one input per call (:data:`INT8_BATCH`), a call per core at
once (:func:`run_each`), and a text model's is used only if it keeps its fp32 vectors on probe
titles (:data:`INT8_MIN_COSINE`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np

ENGINES = ("auto", "torch", "onnx")
#: bump when the export changes, so graphs exported by older code are not reused
EXPORT_VERSION = 1
#: inputs per call of an int8 graph. Dynamic quantization scales a call's activations
#: together (padding included), so in a batch a title's vector, or a pair's score, would
#: depend on what else is in the batch (by up to 0.3 in a cross-encoder's probability,
#: measured); one input per call makes it a function of the input alone. One call at a time
#: on all cores wasted them (int8 titles 171/s, fp32 batched 193/s, on 2 cores in stop 35's
#: bench); a call per core at once runs 410/s, the same vectors.
INT8_BATCH = 1
#: the least mean cosine a text model's int8 vectors must keep to its fp32 vectors on probe
#: titles for the int8 graph to be used (all-MiniLM-L6-v2 keeps 0.99; all-mpnet-base-v2,
#: quantized the same way, 0.06: its vectors would be noise)
INT8_MIN_COSINE = 0.95

logger = logging.getLogger(__name__)


def onnxruntime_available() -> bool:
    """Whether ``onnxruntime`` can be imported."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_engine(engine: str, device: str) -> str:
    """The engine that will run: ``torch`` or ``onnx`` (see the module docstring)."""
    if engine not in ENGINES:
        raise ValueError(f"Unknown engine {engine!r}; use one of {ENGINES}.")
    if engine == "torch" or (engine == "auto" and device != "cpu"):
        return "torch"
    if device != "cpu":
        raise ValueError(f"ENGINE='onnx' runs on the CPU, not {device!r}: use ENGINE='auto' "
                         "(torch on GPUs) or device='cpu'.")
    if not onnxruntime_available():
        _notice("onnxruntime is not installed: encoders run on torch eager "
                "(`pip install onnxruntime` for 2-3x faster CPU embedding).")
        return "torch"
    return "onnx"


@functools.cache
def _notice(message: str) -> None:
    """Log ``message`` once per process."""
    logger.warning(message)


class OnnxModel:
    """An exported graph in an onnxruntime CPU session: ``model(*arrays) -> first output``.
    ``workers``: how many calls :func:`run_each` makes at once with it (an int8 graph runs
    one input per call, each on one core, side by side)."""

    def __init__(self, path: str | Path, threads: int = 0, workers: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: onnxruntime's choice (physical cores)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # no busy-waiting between batches: the cores go to the image decoding workers
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.workers = workers

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        return self.session.run(None, dict(zip(self.input_names, arrays)))[0]


def onnx_model(module, example: tuple, input_names: list[str], dynamic: list[dict[int, str]],
               model_id: str, int8: bool = False, threads: int = 0,
               folder: str | Path | None = None, probe: list[tuple] | None = None,
               one_per_call: bool = False) -> OnnxModel:
    """An :class:`OnnxModel` of ``module`` (a torch module in eval mode), exported on first use.

    ``example`` holds example input tensors (batch >= 2, so the batch axis stays dynamic);
    ``dynamic`` names the dynamic axes of each input, e.g. ``[{0: "batch"}]``; ``model_id``
    names the weights (random weights are hashed, since they differ per process). With
    ``int8`` and ``probe`` (inputs of one call each, as arrays), the int8 graph is used only
    if its output rows keep a mean cosine of :data:`INT8_MIN_COSINE` to the fp32 graph's on
    them; else the fp32 graph runs, with a warning. An int8 graph, and an fp32 one with
    ``one_per_call``, runs one input per call on one core, a call per core at once
    (:func:`run_each`).
    """
    from shopee_match.data.paths import onnx_dir

    folder = Path(folder) if folder else onnx_dir()
    shapes = [[dims.get(axis, size) for axis, size in enumerate(x.shape)]
              for x, dims in zip(example, dynamic)]
    identity = model_id if ":random" not in model_id else f"{model_id}:{_weights_hash(module)}"
    key = hashlib.sha256(repr((identity, input_names, shapes, EXPORT_VERSION)).encode())
    path = folder / f"{key.hexdigest()[:24]}.onnx"
    if not path.is_file():
        export_onnx(module, example, input_names, dynamic, path)
    if not int8:
        return _one_per_call(path, threads) if one_per_call else OnnxModel(path, threads)
    int8_model = _one_per_call(quantized(path), threads)
    if probe is None:
        return int8_model
    fp32 = OnnxModel(path, threads)
    agreement = int8_agreement(fp32, int8_model, probe)
    if agreement >= INT8_MIN_COSINE:
        return int8_model
    logger.warning("int8 quantization breaks %s (its vectors keep a mean cosine of %.2f to "
                   "fp32's on probe titles, below %.2f): it runs in fp32 instead.", model_id,
                   agreement, INT8_MIN_COSINE)
    return fp32


def _one_per_call(path: Path, threads: int = 0) -> OnnxModel:
    """A graph for one input per call: one core each, as many calls at once as there are
    cores (or ``threads``)."""
    return OnnxModel(path, threads=1, workers=threads or cpu_cores())


def cpu_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_each(forward, inputs: list, workers: int = 1) -> list:
    """``[forward(x) for x in inputs]``, ``workers`` calls at a time on threads, in order. For
    calls that release the GIL, such as onnxruntime's runs (one session may run from several
    threads at once); a call's result depends on its own input alone, as in a loop."""
    if workers <= 1 or len(inputs) <= 1:
        return [forward(x) for x in inputs]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(forward, inputs))


def int8_agreement(fp32: OnnxModel, int8: OnnxModel, probe: list[tuple]) -> float:
    """Mean cosine between the output rows of an fp32 graph and its int8 variant, each
    ``probe`` input (a tuple of arrays) run in a call of its own, as int8 graphs run."""
    cosines = []
    for inputs in probe:
        a, b = fp32(*inputs).ravel(), int8(*inputs).ravel()
        cosines.append(float(a @ b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))
    return float(np.mean(cosines))


def as_module(model, forward):
    """``model`` in a torch module whose forward is ``forward(model, *inputs)`` (for export)."""
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return forward(self.model, *inputs)

    return Wrapped()


def export_onnx(module, example: tuple, input_names: list[str], dynamic: list[dict[int, str]],
                path: str | Path) -> Path:
    """Export ``module`` to one self-contained ONNX file, written atomically."""
    import torch
    from torch.export import Dim

    from shopee_match.files import atomic_path

    dims: dict[str, Dim] = {}
    shapes = tuple({axis: dims.setdefault(name, Dim(name)) for axis, name in spec.items()}
                   for spec in dynamic)
    if any(p.kind is p.VAR_POSITIONAL for p in inspect.signature(module.forward).parameters
           .values()):
        shapes = (shapes,)  # forward(*inputs): one argument holding every input
    with atomic_path(path) as tmp, _quiet(), torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(module.eval(), tuple(example), tmp, input_names=input_names,
                          output_names=["vectors"], dynamic_shapes=shapes, dynamo=True,
                          external_data=False, verbose=False)
    return Path(path)


def quantized(path: str | Path) -> Path:
    """The int8 variant of an exported graph (dynamic quantization, per-channel weights)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from shopee_match.files import atomic_path

    path = Path(path)
    out = path.with_name(path.stem + "-int8.onnx")
    if not out.is_file():
        with atomic_path(out) as tmp, _quiet():
            quantize_dynamic(path, tmp, weight_type=QuantType.QInt8, per_channel=True)
    return out


def _weights_hash(module) -> str:
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _quiet():
    """Hide the exporter's progress lines and warnings (they are not the user's business)."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)
