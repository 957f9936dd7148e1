"""The Diff-ST network: tensors in, tensors out (no file I/O).

``DiffSTModel(cfg, n_genes, image_channels, lr_size, hr_size, adjacency)`` encodes the
conditioning once per sample (:meth:`DiffSTModel.encode_condition` → :class:`Condition`) and
denoises ``x_t`` given it (``model(x_t, t, cond)`` → :class:`DenoiserOutput`).
"""

from diffst.models.adjacency import coexpression_adjacency
from diffst.models.config import ModelConfig
from diffst.models.denoiser import DenoiserOutput
from diffst.models.model import Condition, DiffSTModel, count_parameters

__all__ = [
    "Condition",
    "DenoiserOutput",
    "DiffSTModel",
    "ModelConfig",
    "coexpression_adjacency",
    "count_parameters",
]
