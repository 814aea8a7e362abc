"""Retrieval at archive scale: exact, HNSW and IVF indexes from 10k to 1M 768-d vectors.

Every index is built through ``RetrievalIndex.build`` (the service's own code and
settings) and searched through ``RetrievalIndex.search``, so the latencies include what
the daemon pays per query. Two data sets per size:

- ``clustered``: 1,000 Gaussian clusters on the unit sphere. Each cluster varies along its
  own 32-dimensional subspace plus a little isotropic noise, the way embeddings of similar
  interferograms crowd together on a low-dimensional manifold. Queries are fresh draws.
- ``uniform``: random unit vectors, queries likewise: no structure at all, the worst case
  for any approximate index.

For each index: build time, resident-memory growth, single-query and batch-of-64 latency
(p50/p99), and recall@1/@5 against exact search (``IndexFlatIP``). Approximate indexes are
re-measured for each search depth (``--ef-search``/``--nprobe``) without rebuilding.
Prints the table, then ``ratio=<exact p99 / chosen index p99>`` for single queries at the
largest size run (the chosen index is what ``index_type = "auto"`` picks with the current
``RetrievalSettings``).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import faiss
import numpy as np
from rich.console import Console
from rich.table import Table

from insarwatch.config import RetrievalSettings
from insarwatch.console import progress
from insarwatch.retrieval import IndexRecord, RetrievalIndex

DIM = 768
CLUSTERS = 1_000
SUBSPACE = 32
SPREAD, NOISE = 0.6, 0.3
TARGET_RECALL = 0.95
RECORD = IndexRecord("benchmark vector", False, (), (), "synthetic")


def unit(rows: np.ndarray) -> np.ndarray:
    faiss.normalize_L2(rows)
    return rows


class Clustered:
    """A fixed mixture of ``CLUSTERS`` low-rank Gaussians on the unit sphere."""

    name = "clustered"

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.centres = unit(rng.standard_normal((CLUSTERS, DIM), dtype=np.float32))
        # Spreads relative to a unit centre: a structured part (norm ~SPREAD) and isotropic noise (norm ~NOISE).
        scale = np.float32(SPREAD / np.sqrt(SUBSPACE * DIM))
        self.bases = rng.standard_normal((CLUSTERS, SUBSPACE, DIM), dtype=np.float32) * scale

    def draw(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, CLUSTERS, n)
        out = rng.standard_normal((n, DIM), dtype=np.float32)
        out *= np.float32(NOISE / np.sqrt(DIM))
        for cluster in range(CLUSTERS):
            rows = np.flatnonzero(labels == cluster)
            spread = rng.standard_normal((len(rows), SUBSPACE), dtype=np.float32) @ self.bases[cluster]
            out[rows] += self.centres[cluster] + spread
        return unit(out)


class Uniform:
    name = "uniform"

    def __init__(self, seed: int) -> None:
        del seed

    @staticmethod
    def draw(n: int, seed: int) -> np.ndarray:
        return unit(np.random.default_rng(seed).standard_normal((n, DIM), dtype=np.float32))


DATASETS = {"clustered": Clustered, "uniform": Uniform}


@dataclass(frozen=True)
class Row:
    size: int
    dataset: str
    kind: str
    params: str
    build_s: float
    memory_mb: float
    single_p50_ms: float
    single_p99_ms: float
    batch_p50_ms: float
    batch_p99_ms: float
    recall1: float
    recall5: float
    auto: bool


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def latencies(index: RetrievalIndex, queries: np.ndarray, batch: int, k: int) -> np.ndarray:
    times = []
    for start in range(0, len(queries) - batch + 1, batch):
        chunk = queries[start:start + batch]
        began = time.perf_counter()
        index.search(chunk, k)
        times.append(time.perf_counter() - began)
    return np.array(times) * 1000


def ids(index: RetrievalIndex, queries: np.ndarray, k: int) -> np.ndarray:
    """Top-``k`` vector ids; records are all alike here, so ask FAISS for ids directly."""
    return index._search_index.search(queries, k)[1]


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean share of the exact top-``k`` that the index returned in its top-``k``."""
    return float(np.mean([len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth, strict=True)]))


def build(vectors: np.ndarray, settings: RetrievalSettings) -> tuple[RetrievalIndex, float, float]:
    gc.collect()
    before = rss_mb()
    began = time.perf_counter()
    index = RetrievalIndex.build(vectors, [RECORD] * len(vectors), settings)
    seconds = time.perf_counter() - began
    gc.collect()
    return index, seconds, rss_mb() - before


def measure(
    args: argparse.Namespace, size: int, dataset: str, kind: str, params: str, index: RetrievalIndex,
    build_s: float, memory_mb: float, queries: np.ndarray, truth: np.ndarray, auto: bool,
) -> Row:
    single = latencies(index, queries[: args.single_queries], 1, args.k)
    batched = latencies(index, queries, 64, args.k)
    found = truth if kind == "flat" else ids(index, queries, args.k)
    return Row(size, dataset, kind, params, build_s, memory_mb,
               *np.percentile(single, [50, 99]), *np.percentile(batched, [50, 99]),
               recall(found, truth, 1), recall(found, truth, args.k), auto)


def run_size(args: argparse.Namespace, size: int, dataset: str) -> Iterator[Row]:
    source = DATASETS[dataset](args.seed)
    vectors = source.draw(size, args.seed + size)
    queries = source.draw(args.queries, args.seed + 1)
    auto = RetrievalSettings().model_copy(update={"index_type": "auto"})
    auto_kind = "flat" if size <= auto.exact_max_vectors else auto.approximate_type

    flat, seconds, memory = build(vectors, RetrievalSettings(index_type="flat", use_gpu=False))
    truth = ids(flat, queries, args.k)
    yield measure(args, size, dataset, "flat", "exact", flat, seconds, memory, queries, truth, auto_kind == "flat")
    del flat  # at 1M every index holds its own 3 GB copy of the vectors: one at a time
    for kind in args.index:
        if kind == "hnsw":
            settings = RetrievalSettings(index_type="hnsw", hnsw_m=args.hnsw_m,
                                         hnsw_ef_construction=args.ef_construction, use_gpu=False)
            index, seconds, memory = build(vectors, settings)
            for ef in args.ef_search:
                faiss.downcast_index(index._cpu).hnsw.efSearch = ef
                chosen = auto_kind == "hnsw" and ef == auto.hnsw_ef_search and args.hnsw_m == auto.hnsw_m
                yield measure(args, size, dataset, "hnsw", f"M={args.hnsw_m} efC={args.ef_construction} efS={ef}",
                              index, seconds, memory, queries, truth, chosen)
        else:
            settings = RetrievalSettings(index_type="ivf", ivf_nlist=args.nlist, use_gpu=False)
            index, seconds, memory = build(vectors, settings)
            ivf = faiss.downcast_index(index._cpu)
            for nprobe in args.nprobe:
                ivf.nprobe = min(nprobe, ivf.nlist)
                chosen = auto_kind == "ivf" and nprobe == auto.ivf_nprobe and args.nlist == auto.ivf_nlist
                yield measure(args, size, dataset, "ivf", f"nlist={ivf.nlist} nprobe={ivf.nprobe}",
                              index, seconds, memory, queries, truth, chosen)
        del index
        gc.collect()


def table_of(rows: list[Row], k: int) -> Table:
    table = Table(title=f"FAISS at scale — d={DIM}, {faiss.omp_get_max_threads()} threads, k={k}")
    headers = ("n", "data", "index", "parameters", "build s", "ΔRSS MB", "1q p50 ms", "1q p99 ms",
               "64q p50 ms", "64q p99 ms", "recall@1", f"recall@{k}")
    for header in headers:
        table.add_column(header, justify="left" if header in ("data", "index", "parameters") else "right")
    for row in rows:
        table.add_row(
            f"{row.size:,}", row.dataset, row.kind + (" (auto)" if row.auto else ""), row.params,
            f"{row.build_s:.1f}", f"{row.memory_mb:,.0f}", f"{row.single_p50_ms:.2f}", f"{row.single_p99_ms:.2f}",
            f"{row.batch_p50_ms:.1f}", f"{row.batch_p99_ms:.1f}", f"{row.recall1:.3f}", f"{row.recall5:.3f}",
        )
    return table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = RetrievalSettings()
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="examples:\n  python benchmarks/faiss_scale.py --quick\n"
               "  python benchmarks/faiss_scale.py --sizes 1000000 --data clustered --index ivf\n"
               "  python benchmarks/faiss_scale.py --sizes 100000 --ef-search 32 64 128 --nprobe 8 16 32",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="10k and 100k vectors only")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--data", nargs="+", choices=sorted(DATASETS), default=["clustered", "uniform"])
    parser.add_argument("--index", nargs="*", choices=("hnsw", "ivf"), default=["hnsw", "ivf"],
                        help="approximate indexes to compare with exact search (none: exact only)")
    parser.add_argument("--queries", type=int, default=640, help="queries for recall and batch latency")
    parser.add_argument("--single-queries", type=int, default=200, help="queries timed one at a time")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--hnsw-m", type=int, default=defaults.hnsw_m)
    parser.add_argument("--ef-construction", type=int, default=defaults.hnsw_ef_construction)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[defaults.hnsw_ef_search])
    parser.add_argument("--nlist", type=int, default=defaults.ivf_nlist, help="IVF lists (default: the service's rule)")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[defaults.ivf_nprobe])
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = [size for size in args.sizes if size <= 100_000] or [10_000, 100_000]
    if args.queries < 64 or not 1 <= args.single_queries <= args.queries or min(args.sizes) < args.k:
        parser.error("need --queries >= 64, 1 <= --single-queries <= --queries and every size >= k")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Tables are wide; a pipe or log file should not wrap them to 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 200)
    rows: list[Row] = []
    jobs = [(size, dataset) for size in sorted(args.sizes) for dataset in args.data]
    with progress() as bar:
        task = bar.add_task("indexes", total=len(jobs))
        for size, dataset in jobs:
            bar.update(task, description=f"{dataset} {size:,}")
            for row in run_size(args, size, dataset):
                rows.append(row)
                bar.console.log(f"{row.size:,} {row.dataset} {row.kind} {row.params}: build {row.build_s:.1f} s, "
                                f"1q p99 {row.single_p99_ms:.2f} ms, recall@1 {row.recall1:.3f}")
            bar.advance(task)
    console.print(table_of(rows, args.k))
    largest = [row for row in rows if row.size == max(args.sizes) and row.dataset == args.data[0]]
    exact = next(row for row in largest if row.kind == "flat")
    chosen = next((row for row in largest if row.auto), None)
    if chosen is None:
        # auto's index was not among those run: compare with the fastest one that is accurate enough.
        accurate = [row for row in largest if row.recall1 >= TARGET_RECALL] or [exact]
        chosen = min(accurate, key=lambda row: row.single_p99_ms)
        console.print("auto's index was not measured; the ratio uses the fastest index with "
                      f"recall@1 >= {TARGET_RECALL}")
    console.print(f"{chosen.size:,} {chosen.dataset}: {chosen.kind} {chosen.params}, single-query p99 "
                  f"{chosen.single_p99_ms:.2f} ms (exact {exact.single_p99_ms:.2f} ms), recall@1 {chosen.recall1:.3f}")
    print(f"ratio={exact.single_p99_ms / chosen.single_p99_ms:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
