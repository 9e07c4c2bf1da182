"""One disk cache for what the book computes once: class models (chapter 1), top activations
(chapter 5), the tables of chapter 6.

A result is stored under ``cache_dir/<name>-<hash of its key>.npz``: numpy arrays plus a JSON
tree, read with ``allow_pickle=False`` (a planted or damaged file cannot run code; one that does
not parse is recomputed, with a warning). The key must hold everything the result depends on
(model, data, parameters, the code's version); the package version is added to it. A result
type of the package joins with :func:`register_cacheable` (its state as plain values).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["default_cache_dir", "cached", "register_cacheable", "key_digest"]

#: type name -> (type, state of a value, value from its state)
_TYPES: dict[str, tuple[type, Callable[[Any], Any], Callable[[Any], Any]]] = {}


def default_cache_dir() -> Path | None:
    """Where the book keeps what it computes: ``$DEEPINSIDE_CACHE`` if set, else ``_build/cache``
    of the book (the first folder at or above the working directory holding ``_config.yml``),
    else None (no caching)."""
    env = os.environ.get("DEEPINSIDE_CACHE")
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    for d in [here, *here.parents]:
        if (d / "_config.yml").is_file():
            return d / "_build" / "cache"
    return None


def register_cacheable(cls: type, state: Callable[[Any], Any], restore: Callable[[Any], Any]) -> None:
    """Let :func:`cached` store values of ``cls``: ``state(value)`` gives cacheable plain values
    (dicts, lists, arrays, tensors, numbers, strings), ``restore(state)`` the value back."""
    _TYPES[cls.__name__] = (cls, state, restore)


def key_digest(key: Any) -> str:
    """16 hex digits of the SHA-256 of ``repr(key)`` and the package version."""
    from .._version import __version__

    return hashlib.sha256(repr((key, __version__)).encode()).hexdigest()[:16]


def _encode(value: Any, arrays: list[np.ndarray]) -> Any:
    """``value`` as JSON-able data, its arrays and tensors appended to ``arrays`` (by index):
    None, bools, numbers, strings, lists, tuples, dicts (encodable keys, order kept), numpy
    arrays and scalars, tensors, registered types. Anything else is a :class:`TypeError`."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)) and type(value) in (int, float):
        return value if isinstance(value, int) or np.isfinite(value) else {"__t": "float", "v": repr(value)}
    if isinstance(value, (np.ndarray, np.generic)):
        a = np.asarray(value)
        if a.dtype.hasobject:
            raise TypeError("numpy arrays of objects cannot be cached")
        arrays.append(a)
        return {"__t": "ndarray" if isinstance(value, np.ndarray) else "npscalar", "i": len(arrays) - 1}
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        dtype = str(t.dtype).removeprefix("torch.")
        arrays.append((t.float() if t.dtype == torch.bfloat16 else t).numpy())
        return {"__t": "tensor", "i": len(arrays) - 1, "dtype": dtype}
    entry = _TYPES.get(type(value).__name__)
    if entry is not None and type(value) is entry[0]:
        return {"__t": "object", "type": type(value).__name__, "state": _encode(entry[1](value), arrays)}
    if type(value) is dict:
        return {"__t": "dict", "k": [_encode(k, arrays) for k in value],
                "v": [_encode(v, arrays) for v in value.values()]}
    if type(value) in (list, tuple):
        items = [_encode(v, arrays) for v in value]
        return items if type(value) is list else {"__t": "tuple", "v": items}
    raise TypeError(f"a {type(value).__name__} cannot be cached")


def _hashable(key: Any) -> Any:
    if isinstance(key, (list, dict, np.ndarray, torch.Tensor)):
        raise ValueError("a cached dict key is not hashable")
    return key


def _decode(data: Any, arrays: Any) -> Any:
    """The inverse of :func:`_encode`; ``arrays`` maps ``"a<i>"`` to the stored arrays."""
    if isinstance(data, list):
        return [_decode(v, arrays) for v in data]
    if not isinstance(data, dict):
        return data
    kind = data["__t"]
    if kind == "float":
        return float(data["v"])
    if kind == "ndarray":
        return arrays[f"a{int(data['i'])}"]
    if kind == "npscalar":
        return arrays[f"a{int(data['i'])}"][()]
    if kind == "tensor":
        dtype = getattr(torch, str(data["dtype"]))
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"unknown tensor dtype {data['dtype']!r}")
        return torch.from_numpy(np.array(arrays[f"a{int(data['i'])}"])).to(dtype)
    if kind == "tuple":
        return tuple(_decode(v, arrays) for v in data["v"])
    if kind == "dict":
        return {_hashable(_decode(k, arrays)): _decode(v, arrays) for k, v in zip(data["k"], data["v"])}
    if kind == "object":
        if data["type"] not in _TYPES:
            raise ValueError(f"unknown cached type {data['type']!r}")
        return _TYPES[data["type"]][2](_decode(data["state"], arrays))
    raise ValueError(f"unknown cached item {kind!r}")


def _save(path: Path, value: Any) -> None:
    """Write ``value`` to ``path`` (``.npz``: the arrays, and the rest as JSON); atomic."""
    arrays: list[np.ndarray] = []
    tree = json.dumps(_encode(value, arrays)).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{id(value)}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, __tree__=np.frombuffer(tree, dtype=np.uint8),
                 **{f"a{i}": a for i, a in enumerate(arrays)})
    tmp.replace(path)


def _load(path: Path) -> Any:
    """Read what :func:`_save` wrote; never unpickles (``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    tree = arrays.pop("__tree__")
    return _decode(json.loads(tree.tobytes().decode()), arrays)


def cached(name: str, key: Any, compute: Callable[[], Any], cache_dir: str | os.PathLike | None = None) -> Any:
    """``compute()``, stored under ``cache_dir/name-<hash of key>.npz`` and reused when present.

    Args:
        name: the file's prefix (what is cached).
        key: everything the result depends on (its ``repr`` is hashed with the package version).
        compute: makes the value when it is not on disk.
        cache_dir: the folder; None: no caching (``compute()``).

    Returns:
        The value; tensors come back on the CPU. A value that cannot be stored is returned
        uncached, with a warning.
    """
    if cache_dir is None:
        return compute()
    path = Path(cache_dir) / f"{name}-{key_digest(key)}.npz"
    if path.exists():
        try:
            return _load(path)
        except Exception as e:  # noqa: BLE001 - any unreadable file is recomputed
            msg = str(e).splitlines()[0] if str(e) else ""
            warnings.warn(f"cache file {path} is unreadable ({type(e).__name__}: {msg}); "
                          f"recomputing it", RuntimeWarning, stacklevel=2)
    value = compute()
    try:
        _save(path, value)
    except TypeError as e:
        warnings.warn(f"{name}: not cached ({e})", RuntimeWarning, stacklevel=2)
    return value
