"""Worker for tests/test_distributed.py: one rank of a 2-process gloo job, file rendezvous.

Usage: python _dist_worker.py INIT_FILE OUT_JSON N SHARD_SIZE [STORE_DIR]
(RANK and WORLD_SIZE come from the environment, as torchrun sets them.)
"""

import json
import os
import sys
import time

from deepinside.core.distributed import ShardStore, distributed, last_timing, run_sharded


def compute(start: int, stop: int) -> dict:
    if os.environ.get("SLOW_RANK") == os.environ["RANK"]:
        time.sleep(0.2)  # a rank on a busy core: the others should claim more shards
    # a result that depends on the item indices, so a lost or doubled item changes it
    return {"items": list(range(start, stop)), "sum": sum(i * i for i in range(start, stop))}


def main() -> None:
    init_file, out, n, shard_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    store = ShardStore(sys.argv[5], {"job": "squares", "n": n}) if len(sys.argv) > 5 else None
    with distributed("cpu", init_method=f"file://{init_file}", threads=1) as ctx:
        res = run_sharded(n, compute, shard_size=shard_size, ctx=ctx, store=store)
        if ctx.is_main:
            with open(out, "w") as f:
                json.dump({"world": ctx.world_size, "shards": res,
                           "per_rank": list(last_timing().per_rank)}, f)
        else:
            assert res is None


if __name__ == "__main__":
    main()
