"""Reading a training run's checkpoint for export: spec, validated variables, provenance."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

from hybrenet_jax.export.errors import ExportError
from hybrenet_jax.variables import validate_variables
from hybrenet_jax.model_string import spec_from_model_string
from hybrenet_jax.netspec import NetSpec


@dataclasses.dataclass(frozen=True, eq=False)
class CheckpointExport:
    """What an export needs from a run: the spec, its checked variables and where they came
    from."""

    spec: NetSpec
    variables: dict[str, Any]
    model: str
    dataset: str
    meta: dict[str, Any]
    workdir: pathlib.Path
    which: str | int

    def provenance(self) -> dict[str, Any]:
        """The ``source`` record of an export (JSON-ready)."""
        out = {"workdir": str(self.workdir), "checkpoint": str(self.which),
               "step": self.meta.get("step"), "digest": self.meta.get("digest")}
        if "accuracy" in self.meta:
            out["accuracy"] = self.meta["accuracy"]
        recorded = self.meta.get("model")
        if recorded and recorded != self.model:
            out["recorded_model"] = recorded
        return out


def load_checkpoint(workdir: str | pathlib.Path, which: str | int = "latest",
                    model: str | None = None, dataset: str | None = None) -> CheckpointExport:
    """Load a run's checkpoint and check it against its description.

    Args:
      workdir: the run directory (``checkpoints/`` and ``best/`` inside).
      which: ``"latest"``, ``"best"`` or a step number.
      model: model string overriding the one the run recorded.
      dataset: dataset overriding the one the run recorded.

    Raises:
      CheckpointError: no intact checkpoint there.
      ExportError: no model string or dataset recorded and none given.
      VariablesMismatchError: the variables do not fit the described model.
      ModelStringError, DescriptionError: the model string is invalid.
    """
    from hybrenet_jax.train.checkpoint import load_variables  # noqa: PLC0415 (imports orbax)

    from hybrenet_jax.train.storage import workdir_path  # noqa: PLC0415

    workdir = workdir_path(workdir)  # a local path or a URL train writes (file://, gs://, ...)
    variables, meta = load_variables(workdir, which)
    model_string = model or meta.get("model")
    if not model_string:
        raise ExportError(f"the checkpoint in {workdir} does not record its model string; "
                          "pass --model")
    dataset_name = dataset or meta.get("dataset")
    if not dataset_name:
        raise ExportError(f"the checkpoint in {workdir} does not record its dataset; "
                          "pass --dataset")
    spec = spec_from_model_string(model_string, dataset_name)
    where = f"checkpoint {workdir} ({which}, step {meta.get('step')})"
    hint = ("Check the model string: --model gave " if model else
            "Check the model string the run recorded: ") + f"{model_string!r}."
    variables = validate_variables(spec, variables, where, hint)
    return CheckpointExport(spec, variables, model_string, dataset_name, dict(meta), workdir,
                            which)
