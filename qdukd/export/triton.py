"""A Triton Inference Server model repository for the exported model.

One model per backend (``<name>_onnx`` for ONNX Runtime, ``<name>_trt`` for a TensorRT plan),
each ``config.pbtxt`` + ``1/<model file>``, with dynamic batching over the batch dimension and
free H/W, so ``tritonserver --model-repository DIR/triton`` serves it on any machine.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .profiles import TritonSection

# Triton backend name -> (model folder suffix, model file name, platform line).
_BACKENDS = {
    "onnxruntime": ("onnx", "model.onnx", 'backend: "onnxruntime"'),
    "tensorrt_plan": ("trt", "model.plan", 'platform: "tensorrt_plan"'),
}


def config_pbtxt(name: str, backend: str, input_name: str, output_name: str, section: TritonSection) -> str:
    """The text of one model's ``config.pbtxt``.

    Args:
        name: the Triton model name (its folder name).
        backend: ``"onnxruntime"`` or ``"tensorrt_plan"``.
        input_name: the graph's LR input; output_name: its SR output (both float32 N x 3 x H x W).
        section: the profile's ``[triton]`` settings.
    """
    platform = _BACKENDS[backend][2]
    kind = "KIND_GPU" if backend == "tensorrt_plan" else section.instance_kind  # a plan runs only on a GPU

    def tensor(tensor_name: str) -> str:
        return f'  {{\n    name: "{tensor_name}"\n    data_type: TYPE_FP32\n    dims: [ 3, -1, -1 ]\n  }}'

    return (f'name: "{name}"\n{platform}\nmax_batch_size: {section.max_batch_size}\n'
            f"input [\n{tensor(input_name)}\n]\noutput [\n{tensor(output_name)}\n]\n"
            f"dynamic_batching {{\n  max_queue_delay_microseconds: {section.max_queue_delay_us}\n}}\n"
            f"instance_group [\n  {{\n    count: 1\n    kind: {kind}\n  }}\n]\n")


def write_repository(root: str | Path, name: str, model_files: dict[str, Path], input_name: str,
                     output_name: str, section: TritonSection) -> list[str]:
    """Write ``root/<name>_<suffix>/{config.pbtxt, 1/<file>}`` for every backend with a model file.

    Args:
        root: the repository folder (created).
        name: model name stem, e.g. ``"edsr_x4"``.
        model_files: backend -> the model file to copy in (``"onnxruntime"``: model.onnx,
            ``"tensorrt_plan"``: model.plan); backends without a file are left out.
        input_name, output_name: the graph's I/O names.
        section: the profile's ``[triton]`` settings.

    Returns:
        The Triton model names written.
    """
    written = []
    for backend in section.backends:
        if backend not in model_files:
            continue
        suffix, filename, _ = _BACKENDS[backend]
        model_dir = Path(root) / f"{name}_{suffix}"
        (model_dir / "1").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model_files[backend], model_dir / "1" / filename)
        (model_dir / "config.pbtxt").write_text(
            config_pbtxt(model_dir.name, backend, input_name, output_name, section))
        written.append(model_dir.name)
    return written
