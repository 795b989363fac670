"""``init_from``: initialize a model from a state_dict in a file or in object storage.

Sources (never downloaded from a hub; ``imagenet`` and the other symbolic values are resolved to
one of these by the plan, see ``deeptrain.weights``):

- a local path: ``.safetensors``, or a torch file (``.pt``/``.pth``/``.bin``/``.ckpt``,
  read with ``weights_only=True``); other extensions are recognized by content;
- a ``file://`` or ``s3://`` URI, read through ``pyarrow.fs`` (S3 from the standard AWS
  variables ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
  ``AWS_REGION``);
- a directory (or prefix) holding ``weights.safetensors`` / ``weights.pt`` (a model
  version's artifacts);
- any of these with ``#sha256=HEX`` appended (how a plan records the weights it resolved):
  the file's bytes must have that digest.

A checkpoint dict holding the weights under ``state_dict``/``model``/``model_state_dict``
is unwrapped. Keys with timm/torchvision/DDP/Lightning prefixes (``module.``, ``model.``,
``backbone.``) are renamed when that makes them match the model's keys.

``apply_init_from`` loads the base strictly (name and shape) and the head leniently:
a head tensor whose shape differs (another number of classes) keeps its fresh
initialization and is reported.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from deeptrain.training.param_groups import is_head

__all__ = ["InitFromError", "InitReport", "SHA_MARK", "STRIP_PREFIXES", "apply_init_from", "load_state_dict_source",
           "match_keys", "read_source", "split_sha256", "state_dict_from_bytes"]

STRIP_PREFIXES = ("module.", "model.", "backbone.", "_orig_mod.")
WEIGHT_FILES = ("weights.safetensors", "weights.pt", "model.safetensors", "pytorch_model.bin")
_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "module", "weights")
_TORCH_EXTS = (".pt", ".pth", ".bin", ".ckpt")


class InitFromError(ValueError):
    """``init_from`` names something unreadable, or weights that do not fit the model."""


@dataclass
class InitReport:
    """What ``apply_init_from`` did (names are the model's)."""

    missing: list[str] = field(default_factory=list)  # model keys the source lacks (kept fresh)
    unexpected: list[str] = field(default_factory=list)  # source keys the model lacks (ignored)
    reinitialized_head: list[str] = field(default_factory=list)  # head keys whose shape differs (kept fresh)
    loaded: list[str] = field(default_factory=list)
    renamed_prefix: str = ""  # the prefix stripped from the source's keys, if any

    def summary(self) -> str:
        parts = [f"loaded {len(self.loaded)} tensors"]
        if self.renamed_prefix:
            parts.append(f"stripped prefix {self.renamed_prefix!r}")
        if self.reinitialized_head:
            parts.append(f"re-initialized head: {', '.join(self.reinitialized_head)}")
        if self.missing:
            parts.append(f"missing: {', '.join(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected: {', '.join(self.unexpected)}")
        return "; ".join(parts)


# --- reading --------------------------------------------------------------------------

def _filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path) for a file:// or s3:// URI, configured as the service's storage."""
    from deeptrain.errors import InvalidInput
    from deeptrain.storage import filesystem_for

    try:
        return filesystem_for(uri)
    except InvalidInput as exc:
        raise InitFromError(f"init_from {uri!r}: {exc} (nothing is downloaded from the internet)") from None


def _read(uri_or_path: str) -> tuple[bytes, str]:
    """(bytes, the file's path) — a directory/prefix resolves to its weights file."""
    import pyarrow.fs as pafs

    text = os.fspath(uri_or_path)
    if "://" in text:
        fs, path = _filesystem(text)
    else:
        fs, path = pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(text))
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory or (info.type == pafs.FileType.NotFound and "://" in text):
            for name in WEIGHT_FILES:
                candidate = posixpath.join(path, name) if "://" in text else os.path.join(path, name)
                if fs.get_file_info(candidate).type == pafs.FileType.File:
                    path, info = candidate, fs.get_file_info(candidate)
                    break
        if info.type != pafs.FileType.File:
            raise InitFromError(f"init_from {text!r}: no such file (a directory must hold one of "
                                f"{', '.join(WEIGHT_FILES)})")
        with fs.open_input_stream(path) as f:
            return f.read(), path
    except InitFromError:
        raise
    except OSError as exc:
        raise InitFromError(f"init_from {text!r}: cannot read: {exc}") from exc


def _is_safetensors(data: bytes) -> bool:
    if len(data) < 10:
        return False
    header_len = int.from_bytes(data[:8], "little")
    return 0 < header_len <= len(data) - 8 and data[8:9] == b"{"


def _unwrap(obj: Any, source: str) -> dict[str, Tensor]:
    for _ in range(3):  # {"model": {...}} / {"state_dict": {...}} checkpoints
        if isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _CHECKPOINT_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
        else:
            break
    if hasattr(obj, "state_dict") and isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise InitFromError(f"init_from {source!r}: expected a state_dict (a mapping of names to tensors), "
                            f"got {type(obj).__name__}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise InitFromError(f"init_from {source!r}: holds no tensors")
    return tensors


SHA_MARK = "#sha256="


def split_sha256(source: str) -> tuple[str, str | None]:
    """``(location, sha256)`` of a resolved ``init_from`` (``URI#sha256=HEX``, what a plan records)."""
    location, mark, digest = source.partition(SHA_MARK)
    return (location, digest) if mark else (source, None)


def read_source(uri_or_path: str | os.PathLike[str]) -> tuple[bytes, str]:
    """(bytes, the file's path) of a weights source (a directory/prefix resolves to its weights file)."""
    return _read(os.fspath(uri_or_path))


def load_state_dict_source(uri_or_path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a state_dict (on CPU) from a path or a ``file://``/``s3://`` URI; see the module docstring.

    A ``#sha256=HEX`` suffix (a planned ``init_from``) is checked: other bytes there are an error."""
    source, expected = split_sha256(os.fspath(uri_or_path))
    data, path = _read(source)
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise InitFromError(f"init_from {source!r} changed since the run was planned: its sha256 is not {expected}; "
                            "train again to plan with the new file")
    return state_dict_from_bytes(data, path, source)


def state_dict_from_bytes(data: bytes, path: str, source: str) -> dict[str, Tensor]:
    """Decode a weights file's bytes (safetensors or torch, by ``path``'s extension, else by content)."""
    lower = path.lower()
    as_safetensors = lower.endswith(".safetensors") or (not lower.endswith(_TORCH_EXTS) and _is_safetensors(data))
    try:
        if as_safetensors:
            from safetensors.torch import load as load_safetensors

            obj: Any = load_safetensors(data)
        else:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any decoder error means "not a readable weights file"
        raise InitFromError(f"init_from {source!r}: not a readable safetensors or torch weights file: {exc}") from exc
    return _unwrap(obj, source)


# --- matching -------------------------------------------------------------------------

def match_keys(source_keys: Sequence[str], model_keys: Sequence[str],
               prefixes: Sequence[str] = STRIP_PREFIXES) -> tuple[dict[str, str], str]:
    """Rename the source's keys to the model's: ``({source_key: new_key}, stripped_prefix)``.

    Tries the keys as they are, then stripping each known prefix (repeatedly, e.g.
    ``module.model.``) from every key that has it, and keeps the renaming under which
    the most keys match the model.
    """
    model_set = set(model_keys)

    def strip(key: str, prefix: str) -> str:
        while prefix and key.startswith(prefix):
            key = key[len(prefix):]
        return key

    candidates: list[str] = [""]
    for p in prefixes:
        candidates.append(p)
        for q in prefixes:
            if q != p:
                candidates.append(p + q)
    best_prefix, best_score = "", len(model_set.intersection(source_keys))
    for cand in candidates[1:]:
        if not any(k.startswith(cand) for k in source_keys):
            continue
        renamed = [strip(k, cand) for k in source_keys]
        score = len(model_set.intersection(renamed))
        if score > best_score:
            best_prefix, best_score = cand, score
    by_name: dict[str, str] = {}  # new name -> source key
    for src in source_keys:
        dst = strip(src, best_prefix)
        # two source keys with one name: a key that needed no renaming wins, else the first
        if dst in by_name and (by_name[dst] == dst or src != dst):
            continue
        by_name[dst] = src
    return {src: dst for dst, src in by_name.items()}, best_prefix


def apply_init_from(model: nn.Module, state_dict: Mapping[str, Tensor],
                    head_prefixes: Sequence[str]) -> InitReport:
    """Load ``state_dict`` into ``model`` (the unwrapped module), in place.

    - base tensors must match in shape: a mismatch raises ``InitFromError`` naming the
      first bad key and both shapes;
    - head tensors (names under ``head_prefixes``) of another shape keep their fresh
      initialization and are listed in ``reinitialized_head``;
    - model keys the source lacks (``missing``) keep their values; source keys the model
      lacks (``unexpected``) are ignored. If no base tensor matches at all, that is an
      error (the weights belong to another architecture).
    """
    own = model.state_dict()
    mapping, prefix = match_keys(list(state_dict), list(own))
    renamed = {dst: state_dict[src] for src, dst in mapping.items()}
    report = InitReport(renamed_prefix=prefix)
    to_load: dict[str, Tensor] = {}
    for key, target in own.items():
        if key not in renamed:
            report.missing.append(key)
            continue
        value = renamed[key]
        if tuple(value.shape) != tuple(target.shape):
            if is_head(key, head_prefixes):
                report.reinitialized_head.append(key)
                continue
            raise InitFromError(
                f"init_from does not fit the model's base: {key!r} has shape {tuple(value.shape)} in the "
                f"weights but {tuple(target.shape)} in the model (is it the same architecture?)"
            )
        to_load[key] = value
    report.unexpected = [k for k in renamed if k not in own]
    base_keys = [k for k in own if not is_head(k, head_prefixes)]
    if base_keys and not any(k in to_load for k in base_keys):
        sample = ", ".join(list(renamed)[:3])
        raise InitFromError(
            f"init_from matches none of the model's base weights (model keys like {base_keys[0]!r}, "
            f"weights keys like {sample}); is it the same architecture?"
        )
    model.load_state_dict(to_load, strict=False)
    report.loaded = list(to_load)
    return report
