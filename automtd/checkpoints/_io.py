"""Checkpoints: the project's own format and third-party ``.pth``/``.th`` files, never unpickling code.

Own format: a directory with ``model.safetensors`` (the state dict) and ``meta.json``::

    {"format_version": 1, "architecture": {"name": "cifar_resnet20", "kwargs": {}},
     "dataset": "cifar10", "normalization": {"mean": [...], "std": [...]}, "input_size": [3, 32, 32],
     "accuracy": {"test": 91.73}, "num_params": 269722, "plan": null, ...}

A compressed model carries its ``plan`` dict; loading rebuilds the base architecture, applies the plan's
structure (``automtd.plan.apply_plan(..., structure_only=True)``) and loads the weights strictly.
Third-party files load with ``torch.load(weights_only=True, map_location='cpu')``.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import automtd
from automtd._errors import CheckpointError
from automtd.models import get_model, get_model_spec, require_trusted
from automtd.plan import Plan, apply_plan

__all__ = [
    "FORMAT_VERSION",
    "WEIGHTS_FILE",
    "META_FILE",
    "save_checkpoint",
    "load_checkpoint",
    "read_meta",
    "read_state_dict",
    "load_weights",
]

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")


def save_checkpoint(
    directory: str | os.PathLike[str],
    model: nn.Module,
    *,
    architecture: str,
    arch_kwargs: Mapping[str, object] | None = None,
    dataset: str | None = None,
    normalization: Mapping[str, Sequence[float]] | None = None,
    input_size: tuple[int, ...] | None = None,
    accuracy: float | Mapping[str, float] | None = None,
    plan: Mapping[str, object] | None = None,
    extra: Mapping[str, object] | None = None,
) -> Path:
    """Write ``model`` as ``directory/model.safetensors`` + ``directory/meta.json``; returns the directory.

    ``normalization`` and ``input_size`` default to the architecture's :class:`~automtd.models.ModelSpec`.
    ``accuracy`` is top-1 % (a number, or a mapping such as ``{"val": ..., "test": ...}``).
    ``plan`` is the compression plan dict (``Plan.to_dict()``) for compressed models.
    """
    from safetensors.torch import save_file

    spec = get_model_spec(architecture)
    norm = dict(normalization) if normalization is not None else spec.normalization
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "architecture": {"name": architecture, "kwargs": dict(arch_kwargs or {})},
        "dataset": dataset,
        "normalization": {"mean": [float(v) for v in norm["mean"]], "std": [float(v) for v in norm["std"]]},
        "input_size": list(input_size or spec.input_size),
        "accuracy": _plain(accuracy),
        "num_params": sum(p.numel() for p in model.parameters()),
        "plan": _plain(plan),
        "automtd_version": automtd.__version__,
        "torch_version": torch.__version__,
    }
    if extra:
        meta["extra"] = _plain(extra)
    try:
        text = json.dumps(meta, indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint metadata is not plain JSON ({exc}); pass numbers, strings, lists, dicts"
        ) from None
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"checkpoint path {str(out)!r} exists and is not a directory; choose a directory path")
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    tmp = out / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", "automtd_format_version": str(FORMAT_VERSION)})
    os.replace(tmp, out / WEIGHTS_FILE)
    (out / (META_FILE + ".tmp")).write_text(text + "\n")
    os.replace(out / (META_FILE + ".tmp"), out / META_FILE)
    return out


def _plain(value: Any) -> Any:
    """Convert tuples/tensors/numpy scalars to JSON-friendly values."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``meta.json`` of a checkpoint directory, checked for a supported ``format_version``."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint directory {str(directory)!r} has no {META_FILE}; "
                              "pass a directory written by automtd (model.safetensors + meta.json)")
    try:
        meta = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{str(path)!r} is not valid JSON ({exc}); the checkpoint is corrupt, re-save it"
        ) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("architecture"), dict) \
            or not isinstance(meta["architecture"].get("name"), str):
        raise CheckpointError(f"{str(path)!r} lacks architecture.name; the checkpoint is corrupt, re-save it")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{str(path)!r} has format_version {version!r}; this automtd reads "
                              f"{FORMAT_VERSION}; upgrade automtd or re-save the checkpoint")
    return meta


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a third-party ``.pth``/``.th``/``.pt`` file (no code unpickled).

    Wrappers ``{'state_dict': ...}`` (and ``model_state_dict``/``model``/``net``) are unwrapped and a
    ``module.`` prefix (``nn.DataParallel``) is stripped.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint file {str(p)!r} does not exist; check the path")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device="cpu")
        except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError...
            raise CheckpointError(f"checkpoint file {str(p)!r} is corrupt ({exc}); re-save or re-download it") from None
    with p.open("rb") as fh:
        head = fh.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch's zip format or a raw pickle
        raise _not_a_checkpoint(p, "neither a torch zip file nor a pickle")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _GLOBAL.search(str(exc))
        if found is None:  # torch's safe unpickler choked on the bytes themselves
            raise _not_a_checkpoint(p, "its bytes do not unpickle") from None
        raise CheckpointError(
            f"checkpoint file {str(p)!r} needs full unpickling (it stores Python objects, not just tensors: "
            f"{found.group(1)}); refused for safety; re-save it as a state_dict (torch.save(model.state_dict(), ...))"
        ) from None
    except Exception as exc:  # noqa: BLE001 - EOFError, RuntimeError (bad zip), ...
        raise CheckpointError(f"checkpoint file {str(p)!r} cannot be read ({type(exc).__name__}: "
                              f"{str(exc)[:200]}); it is corrupt or not a torch file, re-download it") from None
    return _unwrap(obj, p)


# torch's weights-only unpickler names the class it refused: "Unsupported global: GLOBAL pkg.Class ..."
_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def _not_a_checkpoint(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint file {str(path)!r} is not a checkpoint ({why}); pass a .pth/.th state dict, a .safetensors "
        "file or an automtd checkpoint directory"
    )


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is not None:
                obj = inner
                continue
        break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"checkpoint file {str(path)!r} holds a {type(obj).__name__}, not a state dict; "
                              "save model.state_dict() (optionally as {'state_dict': ...})")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint file {str(path)!r}: entries {bad[:5]} are not tensors; "
                              "save model.state_dict() (optionally as {'state_dict': ...})")
    out: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        out[k[len("module."):] if k.startswith("module.") else k] = v
    return out


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str = "checkpoint") -> None:
    """Load strictly; a shape mismatch names the first key, missing/unexpected keys are listed."""
    own = model.state_dict()
    for key, value in own.items():
        if key in state_dict and tuple(state_dict[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{source}: shape mismatch at {key!r}: checkpoint {tuple(state_dict[key].shape)} vs model "
                f"{tuple(value.shape)}; use the architecture (and num_classes/plan) the checkpoint was saved with"
            )
    missing = [k for k in own if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "") if keys else "none"

        raise CheckpointError(f"{source}: keys do not match the model: missing [{show(missing)}], unexpected "
                              f"[{show(unexpected)}]; use the architecture the checkpoint was saved with")
    model.load_state_dict(dict(state_dict), strict=False)


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    model_name: str | None = None,
    model_kwargs: Mapping[str, object] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint directory (own format) or a third-party weights file; returns ``(model, meta)``.

    For a directory the architecture comes from ``meta.json`` (``model_name`` may be given but must agree);
    for a file ``model_name`` is required.  The model is on the CPU in eval mode.  A user's own
    ``package.module:factory`` architecture is imported only when its module is trusted (named by the user
    with ``--model`` or listed in ``$AUTOMTD_PLUGINS``, see :func:`automtd.models.require_trusted`).
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist; pass a checkpoint directory or a .pth/.th file")
    if p.is_dir():
        meta = read_meta(p)
        arch = meta["architecture"]
        if model_name is not None and model_name != arch["name"]:
            raise CheckpointError(f"checkpoint {str(p)!r} is a {arch['name']!r} but model {model_name!r} was asked "
                                  "for; drop --model (the directory records its architecture)")
        require_trusted(arch["name"], f"checkpoint {str(p)!r}")
        model = get_model(arch["name"], **dict(arch.get("kwargs") or {}))
        if meta.get("plan"):
            model = apply_plan(model, Plan.from_dict(meta["plan"]), structure_only=True)
        state = read_state_dict(p / WEIGHTS_FILE)
        load_weights(model, state, source=f"checkpoint {str(p)!r}")
        return model.eval(), meta
    if model_name is None:
        raise CheckpointError(f"checkpoint file {str(p)!r} does not record its architecture; "
                              "pass the model name (--model, e.g. cifar_resnet20)")
    require_trusted(model_name, f"weights file {str(p)!r}", verb="is to be loaded into")
    spec = get_model_spec(model_name)
    kwargs = dict(model_kwargs or {})
    model = get_model(model_name, **kwargs)
    load_weights(model, read_state_dict(p), source=f"checkpoint {str(p)!r}")
    meta = {
        "format_version": None,
        "architecture": {"name": model_name, "kwargs": kwargs},
        "dataset": None,
        "normalization": spec.normalization,
        "input_size": list(spec.known_input_size) if spec.known_input_size else None,
        "accuracy": None,
        "plan": None,
        "source": str(p),
    }
    return model.eval(), meta
