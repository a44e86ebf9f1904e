"""Export a trained student for deployment: ONNX Q/DQ, TensorRT, the parity gate, Triton.

``python -m qdukd.export CHECKPOINT --out DIR --target PROFILE`` runs the whole job (see
:mod:`qdukd.export.__main__`); the modules each own one step:

- :mod:`.profiles`: deployment target profiles (``export/*.toml``);
- :mod:`.onnx_export`: the deployable Q/DQ copy of the student, the ONNX files;
- :mod:`.trt_rules`: what TensorRT's ONNX parser accepts, checked without TensorRT;
- :mod:`.tensorrt_engine`: the TensorRT builder plan, engine build and runner;
- :mod:`.runtime`: ONNX Runtime sessions and engines as array functions;
- :mod:`.verify`: the parity gate; :mod:`.triton`: the Triton model repository;
- :mod:`.pipeline`: the job that ties them together, writing atomically.
"""

from .pipeline import export_checkpoint
from .profiles import ExportProfile, load_profile
from .trt_rules import check_tensorrt

__all__ = ["ExportProfile", "check_tensorrt", "export_checkpoint", "load_profile"]
