"""DUKD (Data Upcycling Knowledge Distillation): upcycled inputs, paired augmentations, losses.

Zhang et al., "Data Upcycling Knowledge Distillation for Image Super-Resolution",
arXiv:2309.14162.
"""

from __future__ import annotations

from .augment import OPS, apply_ops, invert_ops, sample_ops
from .losses import (
    MODES,
    TARGET_KEYS,
    DukdConfig,
    compute_losses,
    dukd_aux_terms,
    label_consistency_loss,
    standard_terms,
)
from .teacher import Teacher
from .upcycle import cut_cells, zoom_in_cells, zoom_in_count, zoom_out

__all__ = [
    "MODES",
    "OPS",
    "TARGET_KEYS",
    "DukdConfig",
    "Teacher",
    "apply_ops",
    "compute_losses",
    "cut_cells",
    "dukd_aux_terms",
    "invert_ops",
    "label_consistency_loss",
    "sample_ops",
    "standard_terms",
    "zoom_in_count",
    "zoom_in_cells",
    "zoom_out",
]
