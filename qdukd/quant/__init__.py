"""Low-bit quantization-aware training for any SR network, exportable to TensorRT Q/DQ.

Typical use::

    model = build_model("edsr", 4, num_feat=32, num_block=4)   # FP weights loaded
    prepare_qat(model, QuantConfig.from_string("w4a4"))      # swap in quantized twins
    calibrate(model, lr_batches)                               # initial ranges
    ... train ...; freeze(model)
    ckpt = {"weights": model.state_dict(), "quant": quant_state(model)}
    restore_qat(fresh_fp_model, ckpt["quant"]).load_state_dict(ckpt["weights"])

See docs/QUANTIZATION.md for the policy and how it maps onto TensorRT / ONNX Runtime.
"""

from .calibrate import calibrate
from .config import QuantConfig
from .layers import QuantAdd, QuantConv2d, QuantConvTranspose2d, QuantLinear
from .policy import LayerPlan, plan_layers, prepare_qat, quant_config
from .quantizers import FakeQuantizer, dequantize, fake_quantize, grid, lsq_grad_scale, quantize
from .ranges import choose_scale, max_scale, mse_scale, percentile_scale
from .roles import find_roles
from .sensitivity import quantizer_sensitivity
from .state import activation_range_parameters, fake_quantizers, freeze, quant_state, quantized_layers, restore_qat
from .torch_ao import from_torch_ao

__all__ = [
    "FakeQuantizer", "LayerPlan", "QuantAdd", "QuantConfig", "QuantConv2d", "QuantConvTranspose2d", "QuantLinear",
    "activation_range_parameters", "calibrate", "choose_scale", "dequantize", "fake_quantize", "fake_quantizers",
    "find_roles", "freeze", "from_torch_ao", "grid", "lsq_grad_scale", "max_scale", "mse_scale", "percentile_scale",
    "plan_layers", "prepare_qat", "quant_config", "quant_state", "quantize", "quantized_layers", "quantizer_sensitivity",
    "restore_qat",
]
