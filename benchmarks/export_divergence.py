"""Where an exported student starts to differ from PyTorch: activation codes, quantizer by quantizer.

For one exported checkpoint, every activation QuantizeLinear of ``model.onnx`` becomes a graph
output; ONNX Runtime runs it unfused (the gate's reference) and PyTorch runs the frozen student
on the same LR image. Each PyTorch activation quantizer is paired with the ONNX Q of the same
step and shape (the exporter merges identical Qs of one tensor), and the fraction of codes that
differ is printed in execution order: a student that amplifies rounding differences shows a
few flips early and more in every later layer. Also compares ONNX Runtime's Sigmoid kernel with
torch's (PAN's pixel attention uses it).

Usage:
    python benchmarks/export_divergence.py STUDENT.pt EXPORT_DIR [--image 1] [--set Set5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from common import RESULTS, SHARED, machine
from onnx import helper, numpy_helper

from qdukd.atomic import write_json
from qdukd.checkpoint import load_checkpoint, student_from_checkpoint
from qdukd.data import load_set
from qdukd.export.runtime import ort_session
from qdukd.images import to_tensor
from qdukd.quant import FakeQuantizer, freeze


def unfused(model: onnx.ModelProto):  # type: ignore[no-untyped-def]
    """The gate's reference session (``ort_session(optimize=False)``) on an in-memory model."""
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(model, Path(tmp) / "m.onnx")
        return ort_session(Path(tmp) / "m.onnx", optimize=False, threads=1)


def sigmoid_agreement(n: int = 1_000_000) -> dict[str, float]:
    """ONNX Runtime's Sigmoid vs torch.sigmoid on N(0, 4^2) inputs."""
    io = [helper.make_tensor_value_info(k, onnx.TensorProto.FLOAT, [None]) for k in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["y"])], "sigmoid", io[:1], io[1:])
    sess = unfused(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    x = np.random.default_rng(0).normal(0, 4, n).astype(np.float32)
    got, want = sess.run(None, {"x": x})[0], torch.sigmoid(torch.from_numpy(x)).numpy()
    return {"fraction_differing": float((got != want).mean()), "max_abs_diff": float(np.abs(got - want).max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("export_dir")
    ap.add_argument("--set", default="Set5")
    ap.add_argument("--image", type=int, default=1, help="index of the image in the set")
    ap.add_argument("--name", default="export_divergence", help="results file stem")
    args = ap.parse_args()
    torch.set_num_threads(1)

    student = freeze(student_from_checkpoint(load_checkpoint(args.checkpoint)))
    torch_codes: list[tuple[str, float, np.ndarray]] = []
    for name, m in student.named_modules():
        if isinstance(m, FakeQuantizer) and m.axis is None:
            def keep(mod, _args, out, name=name):  # type: ignore[no-untyped-def]
                s = mod.effective_scale().detach()
                torch_codes.append((name, float(s), torch.round(out / s).numpy()))
            m.register_forward_hook(keep)

    model = onnx.load(f"{args.export_dir}/model.onnx")
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    for q in qs:
        dtype = helper.np_dtype_to_tensor_dtype(inits[q.input[2]].dtype)
        model.graph.output.append(helper.make_tensor_value_info(q.output[0], dtype, None))
    image, lr, _ = load_set(SHARED / "benchmarks" / args.set, student.scale)[args.image]
    x = to_tensor(lr)
    with torch.no_grad():
        student(x)
    outs = unfused(model).run([q.output[0] for q in qs], {"lr": x.numpy()})
    onnx_codes = [(float(np.float32(inits[q.input[1]])), o.astype(np.int64) - int(inits[q.input[2]]))
                  for q, o in zip(qs, outs)]

    rows = []
    for name, scale, codes in torch_codes:
        match = next((c for s, c in onnx_codes if s == np.float32(scale) and c.shape == codes.shape), None)
        if match is None:
            continue
        diff = match != codes
        rows.append({"quantizer": name, "fraction_differing": float(diff.mean()),
                     "max_code_diff": int(np.abs(match - codes).max())})
        print(f"{name:<48} codes differing {diff.mean():.2e}  max {rows[-1]['max_code_diff']}")
    sig = sigmoid_agreement()
    print(f"Sigmoid: ONNX Runtime vs torch differ on {sig['fraction_differing']:.1%} of values, "
          f"max {sig['max_abs_diff']:.2e}")
    write_json(RESULTS / f"{args.name}.json", {"checkpoint": args.checkpoint, "image": image, "set": args.set,
                                              "quantizers": rows, "sigmoid": sig, "machine": machine()})


if __name__ == "__main__":
    main()
