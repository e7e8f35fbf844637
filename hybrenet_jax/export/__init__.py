"""Export trained networks for private-inference frameworks (see ``docs/export.md``).

* :mod:`.folding`: BatchNorm folding into the preceding conv (per slice for ReLU-reuse convs;
  a per-channel affine for BatchNorms that follow no conv), walking ``architecture.expand``;
* :mod:`.graph`: the one walker of the folded graph; back ends :mod:`.jax_ops` (evaluate)
  and :mod:`.onnx_export` (emit ONNX, NCHW, opset 17);
* :mod:`.bundle`: portable bundle (``model.json`` + safetensors, directory or ``.zip``) and
  :func:`load_bundle`;
* :mod:`.source`: a run's checkpoint, checked against its description (with :func:`hybrenet_jax.variables.validate_variables`);
* :mod:`.verify`: onnxruntime / round-trip checks against the Flax model.

onnxruntime is imported only when a model is run.
"""

from hybrenet_jax.export.bundle import Bundle, load_bundle, save_bundle
from hybrenet_jax.export.errors import BundleError, ExportError, VariablesMismatchError
from hybrenet_jax.export.folding import FoldedNetwork, fold
from hybrenet_jax.export.jax_ops import apply_folded
from hybrenet_jax.export.onnx_export import build_onnx, export_onnx, relu_scalars, run_onnxruntime
from hybrenet_jax.export.source import CheckpointExport, load_checkpoint
from hybrenet_jax.variables import validate_variables

__all__ = ["Bundle", "BundleError", "CheckpointExport", "ExportError", "FoldedNetwork",
           "VariablesMismatchError", "apply_folded", "build_onnx", "export_onnx", "fold",
           "load_bundle", "load_checkpoint", "relu_scalars", "run_onnxruntime", "save_bundle",
           "validate_variables"]
