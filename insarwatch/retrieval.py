"""Retrieval cross-check: a FAISS index of expert-captioned interferograms.

Owns the index a caption is checked against: vision embeddings of the training split
(L2-normalised, so inner product is cosine similarity) with one ``IndexRecord`` per vector.
On disk it is ``index.faiss`` plus ``index.jsonl`` (line *i* describes vector *i*). Small
indexes are searched exactly (``IndexFlatIP``); large ones use HNSW or IVF, chosen by
``settings.retrieval``. When FAISS sees a GPU the index is searched there through
``index_cpu_to_gpu``; the CPU copy is kept for saving, so the same code runs everywhere.
Loading refuses an index whose dimension differs from the captioner's or whose records do
not match its vectors one to one: that is an index built by another model, and searching
it would give confident wrong answers.

Raw pooled vision outputs of one model all point the same way (cosine ~0.999 between any
two interferograms), so their neighbours carry no information. At build time the index
therefore learns an ``EmbeddingTransform`` from the indexed vectors: which vision output
they are (``retrieval.feature``), their mean to subtract and, optionally, the principal axes
to whiten along (``retrieval.embedding``); it is stored in ``index_transform.safetensors``
and every query goes through the same transform. A version without that file (built before
it existed) searches raw pooled outputs with the identity.

The neighbour vote counts the labels of a handful of examples and saturates: most deforming
tiles, and a few quiet ones, vote 1.0, so it cannot tell a strong isolated tile from the top
of the quiet ones. The index therefore also fits a ``LinearDetector`` on its own vectors and
labels (``index_detector.safetensors``): the probability that a query shows deformation, on a
continuous scale a frame threshold can be calibrated on.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, get_args

import faiss
import numpy as np

from . import files
from .config import RetrievalSettings
from .errors import InputError, InsarwatchError
from .registry import ModelVersion

TRANSFORM_TENSORS = ("mean", "projection")
DETECTOR_TENSORS = ("weights", "bias")
# L2 penalty of the detector's logistic regression (per unit squared weight, on the mean log
# loss): the smallest held-out log loss in 5-fold cross-validation over 1e-7..1e-2 on the
# shipped recipe's synthetic index (0.13 at 1e-5; 0.17 at 1e-4, 0.40 at 1e-7).
DETECTOR_L2 = 1e-5
FEATURES: tuple[str, ...] = get_args(RetrievalSettings.model_fields["feature"].annotation)

@dataclass(frozen=True)
class IndexRecord:
    """What an indexed training image is known to show."""

    caption: str
    deformation: bool
    activity_type: tuple[str, ...]
    intensity: tuple[str, ...]
    source: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexRecord:
        return cls(
            caption=str(data["caption"]),
            deformation=bool(data["deformation"]),
            activity_type=tuple(str(item) for item in data["activity_type"]),
            intensity=tuple(str(item) for item in data["intensity"]),
            source=str(data["source"]),
        )


@dataclass(frozen=True)
class Neighbour:
    similarity: float
    record: IndexRecord


def normalised(vectors: np.ndarray) -> np.ndarray:
    """A float32, C-contiguous, row-wise L2-normalised copy (zero rows stay zero)."""
    out = np.array(vectors, dtype=np.float32, order="C", copy=True, ndmin=2)
    faiss.normalize_L2(out)
    return out


@dataclass(frozen=True, eq=False)  # arrays have no single truth value
class EmbeddingTransform:
    """``normalised((x - mean) @ projection)``: the map from a captioner embedding to an index vector."""

    mean: np.ndarray  # (input_dim,)
    projection: np.ndarray  # (input_dim, output_dim)
    feature: str = "pooled"  # the captioner output it maps (captioner.VisionBatch.features)

    @property
    def input_dim(self) -> int:
        return int(self.projection.shape[0])

    @property
    def output_dim(self) -> int:
        return int(self.projection.shape[1])

    @classmethod
    def identity(cls, dim: int, feature: str = "pooled") -> EmbeddingTransform:
        return cls(np.zeros(dim, dtype=np.float32), np.eye(dim, dtype=np.float32), feature)

    @classmethod
    def fit(cls, embeddings: np.ndarray, settings: RetrievalSettings) -> EmbeddingTransform:
        """Learn ``settings.embedding`` from the vectors to be indexed."""
        vectors = np.asarray(embeddings, dtype=np.float64)
        dim = vectors.shape[1]
        if settings.embedding == "pooled" or len(vectors) < 2:
            return cls.identity(dim, settings.feature)
        mean = vectors.mean(axis=0)
        if settings.embedding == "centred":
            return cls(mean.astype(np.float32), np.eye(dim, dtype=np.float32), settings.feature)
        # Whitening: principal axes of the centred vectors, each scaled to unit variance, so
        # that the few directions where all interferograms differ slightly count as much as
        # the dominant ones; axes with (numerically) no variance are dropped, not amplified.
        _, singular, axes = np.linalg.svd(vectors - mean, full_matrices=False)
        scale = singular / math.sqrt(len(vectors) - 1)
        kept = scale > scale[0] * 1e-4
        if settings.whiten_components is not None:
            kept[settings.whiten_components:] = False
        projection = axes[kept].T / scale[kept]
        return cls(mean.astype(np.float32), projection.astype(np.float32), settings.feature)

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Index vectors of captioner embeddings (rows), L2-normalised."""
        rows = np.asarray(vectors, dtype=np.float32).reshape(-1, self.input_dim)
        return normalised((rows - self.mean) @ self.projection)

    def save(self, path: Path) -> None:
        _save_tensors(path, {"mean": self.mean, "projection": self.projection}, {"feature": self.feature})

    @classmethod
    def load(cls, path: Path) -> EmbeddingTransform:
        tensors, metadata = _load_tensors(path, "embedding transform", TRANSFORM_TENSORS)
        feature = metadata.get("feature", "pooled")
        if feature not in FEATURES:
            raise InputError(path, f"unknown feature {feature!r} (known: {', '.join(FEATURES)})")
        mean, projection = tensors["mean"], tensors["projection"]
        if mean.ndim != 1 or projection.ndim != 2 or projection.shape[0] != mean.shape[0]:
            raise InputError(path, f"mean {mean.shape} and projection {projection.shape} do not fit together")
        return cls(mean.astype(np.float32), projection.astype(np.float32), feature)


@dataclass(frozen=True, eq=False)  # arrays have no single truth value
class LinearDetector:
    """``sigmoid(vector @ weights + bias)``: the probability that an index vector shows
    deformation, a logistic regression fitted on the indexed examples."""

    weights: np.ndarray  # (index dimension,)
    bias: float

    @classmethod
    def fit(cls, vectors: np.ndarray, labels: Sequence[bool], l2: float = DETECTOR_L2) -> LinearDetector | None:
        """Newton's method on the L2-penalised mean log loss (the bias is not penalised);
        None when the labels do not hold both classes (nothing to separate)."""
        y = np.asarray(labels, dtype=np.float64)
        if len(y) == 0 or y.min() == y.max():
            return None
        x = np.hstack([np.asarray(vectors, dtype=np.float64), np.ones((len(y), 1))])
        penalty = np.full(x.shape[1], 2 * l2)
        penalty[-1] = 0.0

        def loss(theta: np.ndarray) -> float:
            z = x @ theta
            return float(np.mean(np.logaddexp(0, z) - y * z) + l2 * theta[:-1] @ theta[:-1])

        theta = np.zeros(x.shape[1])
        current = loss(theta)
        for _ in range(100):
            p = _sigmoid(x @ theta)
            gradient = x.T @ (p - y) / len(y) + penalty * theta
            hessian = (x.T * (p * (1 - p))) @ x / len(y) + np.diag(penalty + 1e-12)
            step = np.linalg.solve(hessian, gradient)
            rate = 1.0  # halved until the loss falls: Newton overshoots on nearly separable data
            while (trial := loss(theta - rate * step)) > current and rate > 1e-6:
                rate /= 2
            theta, current = theta - rate * step, min(trial, current)
            if np.abs(rate * step).max() < 1e-9:
                break
        # float32, as saved: the detector a training run calibrates with is the one the daemon loads.
        return cls(theta[:-1].astype(np.float32), float(np.float32(theta[-1])))

    def probability(self, vectors: np.ndarray) -> np.ndarray:
        """One probability per row of index vectors (float64: the top of the quiet scores and a
        strong tile differ in the sixth decimal)."""
        return _sigmoid(np.asarray(vectors, dtype=np.float64) @ self.weights.astype(np.float64) + self.bias)

    def save(self, path: Path) -> None:
        _save_tensors(path, {"weights": self.weights, "bias": np.array([self.bias], np.float32)})

    @classmethod
    def load(cls, path: Path) -> LinearDetector:
        tensors, _ = _load_tensors(path, "index detector", DETECTOR_TENSORS)
        weights, bias = tensors["weights"], tensors["bias"]
        if weights.ndim != 1 or bias.shape != (1,):
            raise InputError(path, f"weights {weights.shape} and bias {bias.shape} are not a linear detector")
        return cls(weights.astype(np.float32), float(bias[0]))


def _save_tensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """``tensors`` as a safetensors file, written whole or not at all."""
    from safetensors.numpy import save_file

    with files.replacing(path) as temporary:
        save_file({name: np.ascontiguousarray(tensor) for name, tensor in tensors.items()}, str(temporary),
                  metadata=metadata)


def _load_tensors(path: Path, what: str, names: tuple[str, ...]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors and metadata of a safetensors file that must hold exactly ``names``; otherwise a
    one-line ``InputError`` saying it is not a readable ``what`` (a noun starting with a vowel)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as stored:
            tensors = {name: stored.get_tensor(name) for name in stored.keys()}
            metadata = stored.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise InputError(path, f"not a readable {what} ({exc})") from None
    if set(tensors) != set(names):
        raise InputError(path, f"an {what} holds {', '.join(names)}, not {sorted(tensors)}")
    return tensors, metadata


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0, -z))


def _ivf_lists(n: int, requested: int | None) -> int:
    # sqrt(n) lists, not FAISS's 4*sqrt(n): k-means over 4000 lists at 1M vectors takes many
    # minutes on a small CPU, sqrt(n) about one, and nprobe lists then hold nprobe*sqrt(n)
    # vectors (benchmarks/README.md). FAISS wants ~39 training points per list.
    wanted = requested or int(math.sqrt(n))
    return max(1, min(wanted, n // 39 or 1))


def _build_cpu_index(vectors: np.ndarray, kind: str, settings: RetrievalSettings) -> faiss.Index:
    n, dim = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.hnsw_ef_construction
        index.hnsw.efSearch = settings.hnsw_ef_search
    else:
        lists = _ivf_lists(n, settings.ivf_nlist)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(settings.ivf_nprobe, lists)
    index.add(vectors)
    return index


def _kind_of(index: faiss.Index) -> str:
    name = type(faiss.downcast_index(index)).__name__
    return {"IndexFlatIP": "flat", "IndexHNSWFlat": "hnsw", "IndexIVFFlat": "ivf"}.get(name, name)


def _faiss_reason(exc: Exception) -> str:
    """FAISS errors carry a C++ signature; keep only the sentence after it."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    match = re.search(r"\.cpp:\d+: (.*)", text)
    return match.group(1) if match else text


class RetrievalIndex:
    """Normalised embeddings with one record each; cosine k-nearest-neighbour search."""

    def __init__(self, cpu_index: faiss.Index, records: Sequence[IndexRecord], use_gpu: bool = True,
                 transform: EmbeddingTransform | None = None, detector: LinearDetector | None = None) -> None:
        if cpu_index.ntotal != len(records):
            raise InsarwatchError(f"index has {cpu_index.ntotal} vectors but {len(records)} records")
        self.transform = transform or EmbeddingTransform.identity(int(cpu_index.d))
        if self.transform.output_dim != cpu_index.d:
            raise InsarwatchError(f"embedding transform gives {self.transform.output_dim} dimensions, "
                                  f"the index holds {cpu_index.d}")
        if detector is not None and detector.weights.shape[0] != cpu_index.d:
            raise InsarwatchError(f"index detector reads {detector.weights.shape[0]} dimensions, "
                                  f"the index holds {cpu_index.d}")
        self.detector = detector
        self._cpu = cpu_index
        self.records: tuple[IndexRecord, ...] = tuple(records)
        self._search_index = self._cpu
        # HNSW has no GPU implementation in FAISS; it stays on the CPU.
        if use_gpu and faiss.get_num_gpus() > 0 and self.kind != "hnsw" and cpu_index.ntotal > 0:
            # The GPU index does not own its resources: they must live as long as it does.
            self._gpu_resources = faiss.StandardGpuResources()
            self._search_index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, cpu_index)

    @property
    def dim(self) -> int:
        """The dimension of the embeddings it is searched with (before the transform)."""
        return self.transform.input_dim

    @property
    def feature(self) -> str:
        """The captioner output it is searched with (``captioner.VisionBatch.features``)."""
        return self.transform.feature

    @property
    def kind(self) -> str:
        """``flat`` (exact), ``hnsw`` or ``ivf``."""
        return _kind_of(self._cpu)

    def __len__(self) -> int:
        return int(self._cpu.ntotal)

    @classmethod
    def build(
        cls, embeddings: np.ndarray, records: Sequence[IndexRecord], settings: RetrievalSettings
    ) -> RetrievalIndex:
        """Index ``embeddings`` (N x dim) described by ``records``, through the transform
        ``settings.embedding`` learnt from them."""
        embeddings = np.array(embeddings, dtype=np.float32, ndmin=2)
        if len(embeddings) != len(records):
            raise InsarwatchError(f"{len(embeddings)} embeddings but {len(records)} records")
        transform = EmbeddingTransform.fit(embeddings, settings)
        vectors = transform.apply(embeddings)
        kind = settings.index_type
        if kind == "auto" or len(vectors) == 0:
            kind = "flat" if len(vectors) <= settings.exact_max_vectors else settings.approximate_type
        detector = LinearDetector.fit(vectors, [record.deformation for record in records])
        return cls(_build_cpu_index(vectors, kind, settings), records, settings.use_gpu, transform, detector)

    def save(self, directory: str | Path) -> None:
        """Write ``index.faiss``, ``index.jsonl``, the embedding transform and the detector (when
        the examples hold both labels) into ``directory`` (each atomically)."""
        version = ModelVersion.at(directory)
        version.path.mkdir(parents=True, exist_ok=True)
        self.transform.save(version.index_transform_file)
        if self.detector is not None:
            self.detector.save(version.index_detector_file)
        else:
            version.index_detector_file.unlink(missing_ok=True)
        with files.replacing(version.index_file) as index_tmp, files.replacing(version.records_file) as records_tmp:
            faiss.write_index(self._cpu, str(index_tmp))
            with records_tmp.open("w", encoding="utf-8") as out:
                for record in self.records:
                    out.write(record.to_json() + "\n")

    @staticmethod
    def exists(directory: str | Path) -> bool:
        """Whether ``directory`` holds any part of an index (a lone part is an error on load)."""
        version = ModelVersion.at(directory)
        return version.index_file.exists() or version.records_file.exists()

    @classmethod
    def load(
        cls,
        directory: str | Path,
        expected_dim: int | None = None,
        settings: RetrievalSettings | None = None,
    ) -> RetrievalIndex:
        """Read an index saved by ``save``; ``settings`` override its search-time parameters."""
        version = ModelVersion.at(directory)
        index_path, records_path = version.index_file, version.records_file
        if not index_path.is_file():
            raise InputError(index_path, "retrieval index file is missing")
        try:
            cpu_index = faiss.read_index(str(index_path))
        except RuntimeError as exc:
            raise InputError(index_path, f"not a readable FAISS index: {_faiss_reason(exc)}") from None
        if cpu_index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise InputError(index_path, "index does not use inner-product (cosine) similarity")
        transform_path = version.index_transform_file
        # Versions written before the transform existed hold raw pooled vectors: identity.
        transform = EmbeddingTransform.load(transform_path) if transform_path.is_file() else \
            EmbeddingTransform.identity(int(cpu_index.d))
        if transform.output_dim != cpu_index.d:
            raise InputError(transform_path, f"maps to {transform.output_dim} dimensions but "
                                             f"{ModelVersion.INDEX_FILE} holds {cpu_index.d}")
        if expected_dim is not None and transform.input_dim != expected_dim:
            raise InputError(
                index_path,
                f"index dimension {transform.input_dim} does not match the captioner's embedding dimension "
                f"{expected_dim}; the index was built by another model",
            )
        records = _read_records(records_path)
        if len(records) != cpu_index.ntotal:
            raise InputError(
                records_path, f"{len(records)} records for {cpu_index.ntotal} vectors in {ModelVersion.INDEX_FILE}"
            )
        detector_path = version.index_detector_file
        detector = LinearDetector.load(detector_path) if detector_path.is_file() else None
        if detector is not None and detector.weights.shape[0] != cpu_index.d:
            raise InputError(detector_path, f"reads {detector.weights.shape[0]} dimensions but "
                                            f"{ModelVersion.INDEX_FILE} holds {cpu_index.d}")
        if settings is not None:
            _apply_search_settings(cpu_index, settings)
        return cls(cpu_index, records, settings.use_gpu if settings is not None else True, transform, detector)

    def vectors(self) -> np.ndarray:
        """The stored index vectors (after the transform), row *i* for record *i*."""
        if self.kind == "ivf":
            faiss.extract_index_ivf(self._cpu).make_direct_map()
        return self._cpu.reconstruct_n(0, len(self))

    def detect(self, queries: np.ndarray) -> list[float | None]:
        """Each query's probability of deformation by the index's detector; None for each
        without one (an index made before the detector existed, or of one label only)."""
        queries = np.array(queries, dtype=np.float32, ndmin=2)
        if self.detector is None:
            return [None] * len(queries)
        return [float(p) for p in self.detector.probability(self.transform.apply(queries))]

    def search(self, queries: np.ndarray, k: int) -> list[list[Neighbour]]:
        """The ``k`` most similar records for each query row, most similar first."""
        queries = np.array(queries, dtype=np.float32, ndmin=2)
        if queries.shape[1] != self.dim:
            raise InsarwatchError(f"query dimension {queries.shape[1]} does not match index dimension {self.dim}")
        vectors = self.transform.apply(queries)
        k = min(k, len(self))
        if k <= 0 or len(vectors) == 0:
            return [[] for _ in range(len(vectors))]
        similarities, ids = self._search_index.search(vectors, k)
        return [
            [
                Neighbour(float(similarity), self.records[int(i)])
                for similarity, i in zip(row_similarities, row_ids, strict=True)
                if i >= 0
            ]
            for row_similarities, row_ids in zip(similarities, ids, strict=True)
        ]


def _apply_search_settings(index: faiss.Index, settings: RetrievalSettings) -> None:
    concrete = faiss.downcast_index(index)
    if isinstance(concrete, faiss.IndexHNSW):
        concrete.hnsw.efSearch = settings.hnsw_ef_search
    elif isinstance(concrete, faiss.IndexIVF):
        concrete.nprobe = min(settings.ivf_nprobe, concrete.nlist)


def _read_records(path: Path) -> list[IndexRecord]:
    if not path.is_file():
        raise InputError(path, "retrieval index records are missing")
    records = []
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                try:
                    records.append(IndexRecord.from_dict(json.loads(line)))
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise InputError(path, f"line {number}: not an index record ({exc})") from None
    except UnicodeDecodeError:
        raise InputError(path, "not UTF-8 text") from None
    return records
