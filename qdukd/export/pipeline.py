"""The export job: checkpoint -> ONNX (Q/DQ, FP32, INT4) -> TensorRT -> parity gate -> artifacts.

Everything (``report.json``, the browsable ``report.html``, the models, ``manifest.json``) is
written into a staging folder beside ``--out`` and moved into place at the end,
so a crash or a bad input (exit 2) never leaves half an export. A finished export whose parity
gate failed (exit 1) is still moved into place, with ``report.json`` saying ``"passed": false``,
so the failing graph can be inspected; deployment tooling must check ``passed``.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import os
import platform
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import onnx

from ..atomic import write_json
from ..checkpoint import load_checkpoint, student_from_checkpoint
from ..config import to_dict
from ..errors import QdukdError
from ..quant import freeze
from ..report.export_page import ExportFacts, write_export_report
from ..scoring import torch_sr_function
from . import onnx_export, tensorrt_engine, triton
from .float_ops import float_ops
from .profiles import ExportProfile
from .runtime import backend_function, session_config
from .trt_rules import check_tensorrt
from .verify import GateReport, run_gate

FORMAT, VERSION = "qdukd-export", 1
TOOLS = ("torch", "onnx", "onnxruntime", "numpy", "tensorrt")


@dataclass
class ExportResult:
    """What the CLI prints: the gate, the TensorRT build status and the written files."""

    report: GateReport
    engine_status: str  # "built" or "skipped: <reason>"
    files: list[str]
    float_ops: list[dict[str, str]]  # nodes ONNX Runtime CPU leaves float (see float_ops.float_ops)


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tool_versions() -> dict[str, str | None]:
    """Versions of qdukd, Python and the export's libraries (None when not installed)."""
    versions: dict[str, str | None] = {"qdukd": importlib.metadata.version("qdukd"),
                                       "python": platform.python_version()}
    for name in TOOLS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _prepare_out(out: Path) -> None:
    """Refuse, before any work, a folder that is not an earlier export (or empty), or one that
    could not be replaced at the end."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").is_file())):
        raise QdukdError(f"--out {out} exists and is not an earlier qdukd export; choose a new folder")
    if out.exists():
        _check_removable(out)


def _check_removable(root: Path) -> None:
    """Rename every entry of ``root`` (and ``root``) away and back: the exact permission removing
    needs, without removing anything, so a failure leaves the earlier export as it was."""
    for path in [*sorted(root.rglob("*"), reverse=True), root]:
        probe = path.with_name(f".{path.name}.qdukd-probe")
        try:
            path.rename(probe)
        except OSError as e:
            raise QdukdError(f"cannot replace the earlier export in {root}: {path} cannot be removed ({e.strerror}); "
                             "fix its permissions or choose another --out") from None
        probe.rename(path)


def _publish_permissions(root: Path) -> None:
    """Temp files are private (0600); an export is read by servers running as other users."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [root, *root.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _move_into_place(staging: Path, out: Path) -> None:
    """Swap the finished staging folder in for ``out`` (the old export is removed only after)."""
    _publish_permissions(staging)
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{staging.name}")
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
        if old.exists():  # changed under us since _check_removable: keep the new export, say so
            print(f"warning: could not remove the earlier export, now in {old}; remove it by hand", file=sys.stderr)


def _engine(staging: Path, out: Path, profile: ExportProfile) -> str:
    """Build ``model.plan`` when the profile asks and TensorRT can; returns the status line.

    A relative timing cache lives in the export folder; the previous export's is reused.
    """
    if not profile.tensorrt.build:
        return "skipped: not requested by the profile (tensorrt.build = false)"
    reason = tensorrt_engine.unavailable_reason()
    if reason:
        return f"skipped: {reason}"
    plan = tensorrt_engine.builder_plan(profile, onnx_export.INPUT_NAME)
    cache = Path(profile.tensorrt.timing_cache).expanduser()
    if not cache.is_absolute():
        if (out / cache).is_file():
            shutil.copyfile(out / cache, staging / cache)
        cache = staging / cache
    tensorrt_engine.build_engine(staging / "model.onnx", plan, staging / "model.plan", cache)
    return "built"


def export_checkpoint(checkpoint: str | Path, out: str | Path, profile: ExportProfile, verify_sets: list[Path],
                      log: Callable[[str], None] = print, progress: bool = True,
                      min_gain_db: float = 0.0, trust_code: bool = False) -> ExportResult:
    """Export a training checkpoint for ``profile`` and gate it on ``verify_sets``.

    Args:
        checkpoint: a qdukd training checkpoint (it carries the recipe and the quant state).
        out: the export folder (replaced if it holds an earlier export).
        profile: the deployment target (its ``verify.max_psnr_drop`` is the tolerance).
        verify_sets: HR folders or BasicSR-layout sets for the parity gate.
        log: progress lines.
        progress: show progress bars while scoring.
        min_gain_db: the gate's quality floor: the PyTorch student's PSNR_Y minus bicubic's, on
            every verify set.
        trust_code: allow rebuilding a student whose code lives outside qdukd (import path or
            plugin); see :func:`qdukd.checkpoint.student_from_checkpoint`.

    Raises:
        QdukdError: bad checkpoint, a layer the target cannot run, a graph TensorRT cannot import.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    _prepare_out(out)
    ckpt = load_checkpoint(checkpoint)
    model = freeze(student_from_checkpoint(ckpt, trust_code=trust_code))
    scale, student = ckpt["recipe"]["data"]["scale"], ckpt["recipe"]["student"]
    deploy, layers = onnx_export.deployable_copy(model, profile.graph)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        log(f"exporting {student['model']} x{scale} ({len(layers)} quantized layers) for {profile.name}")
        onnx_export.export_onnx(deploy, staging / "model.onnx", profile.graph.opset, profile.graph.clip)
        fp32 = onnx_export.float_copy(model)
        onnx_export.export_onnx(fp32, staging / "model_fp32.onnx", profile.graph.opset)
        if profile.graph.int4_weights:
            onnx_export.write_int4_variant(staging / "model.onnx", staging / "model_int4.onnx")
        violations = check_tensorrt(onnx.load(staging / "model.onnx"))
        if profile.tensorrt.build and violations:
            raise QdukdError(f"TensorRT cannot import the graph: {'; '.join(map(str, violations))}")
        engine_status = _engine(staging, out, profile)
        log(f"tensorrt engine: {engine_status}")

        backends = {name: partial(backend_function, name, staging, profile) for name in profile.verify.backends}
        report = run_gate(torch_sr_function(model), backends, verify_sets, scale, profile.verify.max_psnr_drop,
                          profile.verify.convention, progress, min_gain_db)
        floats = float_ops(staging / "model.onnx", session_config(profile.onnxruntime))
        report_dict = {**report.to_dict(), "profile": profile.name, "verify_sets": [str(s) for s in verify_sets],
                       "tensorrt_engine": engine_status,
                       "tensorrt_rules": [str(v) for v in violations],
                       "onnxruntime_float_ops": floats}
        write_json(staging / "report.json", report_dict)

        model_files = {"onnxruntime": staging / "model.onnx"}
        if (staging / "model.plan").is_file():
            model_files["tensorrt_plan"] = staging / "model.plan"
        name = f"{student['model']}_x{scale}"
        triton_models = triton.write_repository(staging / "triton", name, model_files, onnx_export.INPUT_NAME,
                                                onnx_export.OUTPUT_NAME, profile.triton)
        manifest = {
            "format": FORMAT, "version": VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "source": {"checkpoint": str(checkpoint), "sha256": sha256(checkpoint), "model": student["model"],
                       "args": student["args"], "scale": scale, "step": ckpt.get("step")},
            "opset": profile.graph.opset,
            "input": {"name": onnx_export.INPUT_NAME, "shape": ["N", 3, "H", "W"], "dtype": "float32",
                      "range": [0.0, 1.0]},
            "output": {"name": onnx_export.OUTPUT_NAME, "shape": ["N", 3, f"{scale}H", f"{scale}W"],
                       "dtype": "float32", "range": [0.0, 1.0]},
            "layers": [asdict(layer) for layer in layers],
            "files": {},  # below, once report.html is written
            "onnxruntime": {"exact_u8u8": profile.onnxruntime.exact_u8u8,
                            "session_config": dict(profile.onnxruntime.session_config),
                            "session_config_on_export_machine": session_config(profile.onnxruntime)},
            "tensorrt_engine": engine_status, "triton_models": triton_models,
            "profile": to_dict(profile), "tools": tool_versions(), "passed": report.passed,
        }
        write_export_report(staging / "report.html", ExportFacts(report_dict, manifest, ckpt, fp32, report.outputs,
                                                                 verify_sets, staging))
        files = sorted(p.name for p in staging.iterdir() if p.is_file())
        manifest["files"] = {f: {"bytes": (staging / f).stat().st_size, "sha256": sha256(staging / f)} for f in files}
        write_json(staging / "manifest.json", manifest)
        _move_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(report, engine_status, files + ["manifest.json"], floats)
