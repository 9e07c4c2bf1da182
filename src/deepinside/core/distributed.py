"""Dataset-wide jobs sharded over processes with ``torch.distributed`` (launched by torchrun).

The paper's quantitative results are sums over a dataset: the ILSVRC localisation error of
Sect. 3.2 counts, image by image, whether a box of a correct class overlaps a ground-truth box
by 50 %; Zeiler & Fergus's top-9 activations are a running maximum over the validation set.
Both split into disjoint *shards* of consecutive images whose partial results merge exactly
(integer counts add; top-k lists concatenate and are cut to k again). This module is that split,
and nothing else:

- :func:`distributed` joins the process group torchrun describes in the environment (``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); alone (no torchrun) it is a
  no-op context with rank 0 of 1, so the same code runs in one process;
- :func:`shard_ranges` cuts ``n`` items into consecutive shards of ``shard_size`` (no padding,
  no item counted twice). The shard boundaries do not depend on the number of processes, so each
  shard goes through the network in the same batches whatever ``w`` is: results are identical to
  a single-process run. Which rank computes which shard is decided at run time: each rank claims
  the next unclaimed shard from an atomic counter on the process group's key-value store (the
  one torchrun's rendezvous set up), so a rank that finishes early takes more shards and no rank
  waits on a fixed share (images differ in cost: a GraphCut on a 500x375 photo is several times
  one on 227x227);
- :class:`ShardStore` writes each shard's result to its own file as soon as it is done (atomic
  rename), so a killed run restarts where it stopped, and merging is a separate, fast step;
- :func:`run_sharded` runs a job's missing shards on this rank and returns every shard's result,
  in shard order, on rank 0 (``None`` on the others): only rank 0 prints and writes.

Threads: torchrun sets ``OMP_NUM_THREADS=1`` for every process when ``--nproc-per-node`` > 1,
so N processes use N cores; :func:`distributed` sets torch's intra-op threads to ``threads``
when given (``deepinside ... --threads``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist

from ._progress import mode as progress_mode
from ._progress import progress

__all__ = ["Context", "distributed", "shard_ranges", "ShardStore", "run_sharded", "Subset",
           "ShardTiming", "last_timing", "ShardStoreError", "files_digest"]


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on the one process that prints and writes (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """True when a process group of more than one process is joined."""
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} is not an integer") from None


@contextmanager
def distributed(device: str | torch.device = "cpu", *, init_method: str | None = None,
                threads: int | None = None, timeout_s: float = 6 * 3600) -> Iterator[Context]:
    """Join the torchrun process group (gloo on CPU, NCCL on CUDA) for the ``with`` block.

    Alone (``WORLD_SIZE`` unset or 1) nothing is initialised and the context is rank 0 of 1.
    A group that is already initialised (by the caller) is used as it is and left open.

    Args:
        device: the device the job runs on; ``"cuda"``/``cuda:*`` selects NCCL and pins this
            process to GPU ``LOCAL_RANK``.
        init_method: rendezvous URL (``"env://"`` by default, as torchrun sets it up;
            ``"file:///path"`` for a launcher-free file rendezvous, as the tests use).
        threads: torch intra-op threads for this process (None: leave as set, i.e. torchrun's
            ``OMP_NUM_THREADS=1`` under torchrun, all cores alone).
        timeout_s: how long a collective waits for the slowest rank (long shards on big
            datasets: hours, not the default 30 minutes).
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    created = False
    if world > 1:
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        if not dist.is_initialized():
            backend = "nccl" if dev.type == "cuda" else "gloo"
            if dev.type == "cuda":
                torch.cuda.set_device(local % max(1, torch.cuda.device_count()))
            dist.init_process_group(backend=backend, init_method=init_method or "env://",
                                    rank=rank, world_size=world,
                                    timeout=timedelta(seconds=timeout_s))
            created = True
    quiet = world > 1 and rank != 0  # one progress bar per job: rank 0's
    saved = os.environ.get("DEEPINSIDE_PROGRESS")
    if quiet:
        os.environ["DEEPINSIDE_PROGRESS"] = "0"
    try:
        yield Context(rank=rank, world_size=world, local_rank=local)
    finally:
        if quiet:
            if saved is None:
                os.environ.pop("DEEPINSIDE_PROGRESS", None)
            else:
                os.environ["DEEPINSIDE_PROGRESS"] = saved
        if created and dist.is_initialized():
            dist.destroy_process_group()


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    """Consecutive ``[start, stop)`` shards covering ``range(n)``, each ``shard_size`` long
    (the last one shorter). Independent of the number of processes."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return [(s, min(n, s + shard_size)) for s in range(0, n, shard_size)]


class Subset:
    """Items ``indices`` of a dataset, with its ``records`` (when it has them) in the same order.

    ``Subset(ds, range(a, b))[i]`` is ``ds[a + i]``; works for :class:`~deepinside.data.
    IlsvrcDataset` and any indexable sequence of ``(image, record)`` pairs.
    """

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = list(indices)
        recs = getattr(dataset, "records", None)
        if recs is not None:
            self.records = [recs[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[self.indices[i]]

    def __iter__(self) -> Iterator[Any]:
        return (self[i] for i in range(len(self)))


class ShardStoreError(ValueError):
    """A shard folder that cannot be read or written (read-only, ``shards`` a file, ...)."""


def files_digest(paths: Sequence[str | os.PathLike]) -> str:
    """SHA-256 over the names, sizes and bytes of ``paths`` (in order): what a shard was
    computed from. Hashing the JPEGs and XMLs of a shard costs milliseconds next to its
    forward passes."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        data = p.read_bytes()
        h.update(f"{p.name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def _key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


class ShardStore:
    """One JSON file per finished shard under ``folder/shards/``, and the job's key.

    A shard's identity is what it was computed from. Each shard file carries the digest of the
    job ``key`` (model, every option that changes a number, the dataset) and, when ``inputs`` is
    given, ``inputs(start, stop)``: a content hash of the shard's items (e.g.
    :func:`files_digest` of its images and annotations). A shard file counts as done only when it
    parses, both digests match and ``check(result, start, stop)`` (when given) finds nothing
    impossible; otherwise it is recomputed, with a one-line warning naming the file and why. So
    an annotation edited after a run recomputes that shard, and shards copied into a folder
    without ``job.json`` are not merged into a job they do not belong to.

    Reopening a folder whose ``job.json`` holds a different key is an error, so a restart never
    mixes two jobs' results. Merging shards that are all present writes nothing (a read-only
    folder merges).
    """

    FORMAT = 2

    def __init__(self, folder: str | os.PathLike, key: dict[str, Any], *,
                 inputs: Callable[[int, int], str] | None = None,
                 check: Callable[[Any, int, int], str | None] | None = None) -> None:
        self.folder = Path(folder)
        self.key = json.loads(json.dumps(key))  # canonical, JSON-able
        self.job_digest = _key_digest(self.key)
        self.inputs = inputs
        self.check = check
        self._valid: dict[tuple[int, int], Any] = {}
        self._digests: dict[tuple[int, int], str | None] = {}
        if self.folder.exists() and not self.folder.is_dir():
            raise ShardStoreError(f"{self.folder} exists and is not a directory")
        job = self.folder / "job.json"
        if job.exists():
            try:
                old = json.loads(job.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ShardStoreError(f"{job} is not a job file of deepinside: {e}") from None
            if not isinstance(old, dict):
                raise ShardStoreError(f"{job} is not a job file of deepinside")
            if old != self.key:
                diff = sorted(k for k in set(old) | set(self.key) if old.get(k) != self.key.get(k))
                raise ShardStoreError(f"{self.folder} holds the results of another job (differs "
                                      f"in {', '.join(diff)}); use another --out folder")

    def prepare(self) -> None:
        """Create the folder and write the job key (rank 0, before any shard is written)."""
        try:
            (self.folder / "shards").mkdir(parents=True, exist_ok=True)
            job = self.folder / "job.json"
            text = json.dumps(self.key, indent=1, sort_keys=True)
            if not job.exists() or job.read_text() != text:
                _atomic_write(job, text)
        except OSError as e:
            raise ShardStoreError(f"cannot write results under {self.folder}: "
                                  f"{e.strerror or e} ({e.filename or self.folder})") from None

    def path(self, shard: tuple[int, int]) -> Path:
        return self.folder / "shards" / f"{shard[0]:08d}-{shard[1]:08d}.json"

    def _digest(self, shard: tuple[int, int]) -> str | None:
        if self.inputs is None:
            return None
        if shard not in self._digests:
            self._digests[shard] = self.inputs(*shard)
        return self._digests[shard]

    def problem(self, shard: tuple[int, int]) -> str | None:
        """Why the file of ``shard`` cannot be used (None when it can); ``"missing"`` if absent."""
        p = self.path(shard)
        if not p.is_file():
            return "missing"
        try:
            doc = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            return f"does not parse ({type(e).__name__})"
        if not isinstance(doc, dict) or doc.get("format") != self.FORMAT or "result" not in doc:
            return "is not a shard file of this version"
        if doc.get("job") != self.job_digest:
            return "was computed for another job (model or options differ)"
        if doc.get("inputs") != self._digest(shard):
            return "was computed from other images or annotations (their contents changed)"
        if self.check is not None:
            try:
                why = self.check(doc["result"], *shard)
            except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
                why = f"malformed result ({type(e).__name__}: {e})"
            if why:
                return f"holds an impossible result: {why}"
        self._valid[shard] = doc["result"]
        return None

    def done(self, shard: tuple[int, int]) -> bool:
        return shard in self._valid or self.problem(shard) is None

    def missing(self, shards: Sequence[tuple[int, int]], *, warn: bool = True
                ) -> list[tuple[int, int]]:
        """The shards to compute: absent, or present but unusable (one warning line each)."""
        todo = []
        for s in shards:
            why = self.problem(s)
            if why is None:
                continue
            todo.append(s)
            if why != "missing" and warn:
                print(f"deepinside: warning: shard {self.path(s)} {why}; recomputing it",
                      file=sys.stderr, flush=True)
        return todo

    def save(self, shard: tuple[int, int], result: Any) -> None:
        doc = {"format": self.FORMAT, "job": self.job_digest, "inputs": self._digest(shard),
               "result": result}
        try:
            _atomic_write(self.path(shard), json.dumps(doc))
        except OSError as e:
            raise ShardStoreError(f"cannot write shard {self.path(shard)}: "
                                  f"{e.strerror or e}") from None
        self._valid[shard] = json.loads(json.dumps(result))

    def load(self, shard: tuple[int, int]) -> Any:
        if shard in self._valid:
            return self._valid[shard]
        why = self.problem(shard)
        if why is not None:
            raise ShardStoreError(f"shard {self.path(shard)} {why}")
        return self._valid[shard]


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class ShardTiming:
    """Wall-clock time of one :func:`run_sharded` call, as rank 0 saw it.

    ``seconds`` runs from the barrier after which every rank starts computing to the merged
    result (model loading inside the first ``compute`` included, process start-up and
    ``import torch`` excluded); ``computed`` counts the shards computed in this run (all ranks),
    ``shards`` all of the job's shards, ``per_rank`` the shards each rank computed.
    """

    items: int
    shards: int
    computed: int
    world_size: int
    seconds: float
    per_rank: tuple[int, ...]

    def line(self, desc: str) -> str:
        rate = self.items / self.seconds if self.seconds > 0 else float("inf")
        ranks = "+".join(map(str, self.per_rank))
        return (f"deepinside: {desc}: {self.items} items ({self.computed} of {self.shards} shards "
                f"computed, {ranks} per rank) in {self.seconds:.1f} s on {self.world_size} "
                f"process(es): {rate:.2f} items/s")


_LAST: list[ShardTiming] = []
_CALLS = itertools.count()


def last_timing() -> ShardTiming | None:
    """The :class:`ShardTiming` of this process's last :func:`run_sharded` (rank 0; None before)."""
    return _LAST[-1] if _LAST else None


def _claimer(ctx: Context, todo: Sequence[Any]) -> Iterator[Any]:
    """This rank's shards of ``todo``, claimed one at a time from a counter shared by all ranks.

    In a process group, ``store.add(key, 1)`` on the group's key-value store (TCP under torchrun,
    a file with ``file://`` rendezvous) is atomic across processes: each value is handed to
    exactly one rank, so every shard is computed once, by whichever rank is free first. Alone,
    every shard in order. Every rank must call :func:`run_sharded` in the same order (as SPMD
    code does), so the call counter names the same key on each. A context that claims several
    ranks without a joined group (no store to share) takes the fixed share ``todo[rank::world]``.
    """
    call = next(_CALLS)
    if not ctx.active:
        yield from todo[ctx.rank::ctx.world_size]
        return
    from torch.distributed import distributed_c10d as c10d

    store = c10d._get_default_store()
    key = f"deepinside/run_sharded/{call}"
    while True:
        i = store.add(key, 1) - 1
        if i >= len(todo):
            return
        yield todo[i]


def run_sharded(n: int, compute: Callable[[int, int], Any], *, shard_size: int = 64,
                ctx: Context | None = None, store: ShardStore | None = None,
                desc: str = "shards") -> list[Any] | None:
    """Run ``compute(start, stop)`` for the shards of ``range(n)`` this rank claims; merge on rank 0.

    ``compute`` returns a JSON-able result for items ``start..stop-1``. With a ``store``, shards
    already on disk are skipped and each new result is written as soon as it is computed; the
    results are then read back from disk by rank 0. Without one, results travel to rank 0 with
    ``gather_object``. Rank 0 prints one timing line on stderr (:class:`ShardTiming`) unless
    progress output is off (``DEEPINSIDE_PROGRESS=0``); :func:`last_timing` returns it.

    Returns:
        On rank 0, the list of every shard's result in shard order (length
        ``ceil(n / shard_size)``); ``None`` on the other ranks.
    """
    ctx = ctx or Context()
    shards = shard_ranges(n, shard_size)
    # the missing (or unusable) shards, listed by every rank before anyone writes one (same
    # list on each rank); a merge of shards that are all there writes nothing
    todo = shards if store is None else store.missing(shards, warn=ctx.is_main)
    if store is not None and ctx.is_main and todo:
        store.prepare()
    if ctx.active:
        dist.barrier()  # the job key is written and every rank has listed what is missing
    t0 = time.perf_counter()
    local: dict[int, Any] = {}
    bar = progress(total=len(todo), desc=f"{desc} (rank {ctx.rank})", unit="shard")
    try:
        for s in _claimer(ctx, todo):
            result = compute(*s)
            if store is not None:
                store.save(s, result)
                local[s[0]] = None
            else:
                local[s[0]] = result
            bar.update(1)
    finally:
        bar.close()
    # every rank's {shard start: result} (None with a store: the result is on disk) to rank 0;
    # with a store this gather is also the barrier after which every shard file is written
    if ctx.active:
        parts: list[Any] = [None] * ctx.world_size if ctx.is_main else []
        dist.gather_object(local, parts if ctx.is_main else None, dst=0)
    else:
        parts = [local]
    if not ctx.is_main:
        return None
    if store is None:
        merged = {k: v for p in parts for k, v in p.items()}
        out = [merged[s[0]] for s in shards]
    else:
        missing = [s for s in shards if not store.done(s)]
        if missing:
            raise RuntimeError(f"{len(missing)} shard result(s) missing under {store.folder}, "
                               f"e.g. {store.path(missing[0]).name}")
        out = [store.load(s) for s in shards]
    _finish(ctx, n, shards, [len(p) for p in parts], t0, desc)
    return out


def _finish(ctx: Context, n: int, shards: list, per_rank: Sequence[int], t0: float,
            desc: str) -> None:
    timing = ShardTiming(items=n, shards=len(shards), computed=sum(per_rank),
                         world_size=ctx.world_size, seconds=time.perf_counter() - t0,
                         per_rank=tuple(per_rank))
    _LAST[:] = [timing]
    if progress_mode() != "0":
        print(timing.line(desc), file=sys.stderr, flush=True)
