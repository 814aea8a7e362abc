"""The FAISS retrieval index: exact search, approximate recall, persistence and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from insarwatch.config import RetrievalSettings
from insarwatch.errors import InputError
from insarwatch.registry import ModelVersion
from insarwatch.retrieval import IndexRecord, RetrievalIndex

INDEX_FILE, RECORDS_FILE = ModelVersion.INDEX_FILE, ModelVersion.RECORDS_FILE


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def records_for(n: int) -> list[IndexRecord]:
    return [
        IndexRecord(
            caption=f"caption {i}",
            deformation=i % 2 == 0,
            activity_type=("Mogi",) if i % 2 == 0 else (),
            intensity=("High",) if i % 2 == 0 else (),
            source=str(1000 + i),
        )
        for i in range(n)
    ]


def clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    members = centres[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, dim))
    return unit(members)


def test_exact_search_matches_numpy_cosine_ranking() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(300, 24)).astype(np.float32)  # deliberately not normalised
    queries = rng.normal(size=(7, 24)).astype(np.float32)
    index = RetrievalIndex.build(base, records_for(300), RetrievalSettings())
    assert index.kind == "flat" and len(index) == 300 and index.dim == 24

    results = index.search(queries, 5)

    cosine = unit(queries) @ unit(base).T
    for row, neighbours in zip(cosine, results, strict=True):
        expected = np.argsort(-row)[:5]
        assert [n.record.source for n in neighbours] == [str(1000 + i) for i in expected]
        np.testing.assert_allclose([n.similarity for n in neighbours], row[expected], atol=1e-5)


def test_k_larger_than_index_returns_every_record_once() -> None:
    index = RetrievalIndex.build(unit(np.eye(3, 8, dtype=np.float32)), records_for(3), RetrievalSettings())
    (neighbours,) = index.search(np.ones((1, 8), dtype=np.float32), 10)
    assert sorted(n.record.source for n in neighbours) == ["1000", "1001", "1002"]


def test_save_load_round_trip_keeps_vectors_records_and_answers(tmp_path) -> None:
    vectors = clustered(200, 16, 5, seed=1)
    records = records_for(200)
    index = RetrievalIndex.build(vectors, records, RetrievalSettings())
    index.save(tmp_path)

    loaded = RetrievalIndex.load(tmp_path, expected_dim=16)

    assert loaded.records == tuple(records)
    queries = clustered(10, 16, 5, seed=2)
    before, after = index.search(queries, 5), loaded.search(queries, 5)
    assert [[n.record for n in row] for row in before] == [[n.record for n in row] for row in after]
    assert (tmp_path / RECORDS_FILE).read_text(encoding="utf-8").count("\n") == 200


def test_load_refuses_an_index_of_another_dimension(tmp_path) -> None:
    RetrievalIndex.build(clustered(20, 16, 2, seed=3), records_for(20), RetrievalSettings()).save(tmp_path)
    with pytest.raises(InputError) as error:
        RetrievalIndex.load(tmp_path, expected_dim=32)
    assert error.value.path == str(tmp_path / INDEX_FILE)
    assert "dimension 16" in error.value.reason and "32" in error.value.reason


def test_load_refuses_records_that_do_not_match_the_vectors(tmp_path) -> None:
    RetrievalIndex.build(clustered(20, 16, 2, seed=4), records_for(20), RetrievalSettings()).save(tmp_path)
    lines = (tmp_path / RECORDS_FILE).read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / RECORDS_FILE).write_text("".join(lines[:-1]), encoding="utf-8")
    with pytest.raises(InputError) as error:
        RetrievalIndex.load(tmp_path)
    assert error.value.path == str(tmp_path / RECORDS_FILE)
    assert "19 records for 20 vectors" in error.value.reason


@pytest.mark.parametrize(
    ("damage", "broken_file", "reason"),
    [
        (lambda d: (d / INDEX_FILE).unlink(), INDEX_FILE, "missing"),
        (lambda d: (d / INDEX_FILE).write_bytes(b"\x00not faiss at all"), INDEX_FILE, "not a readable FAISS index"),
        (lambda d: (d / INDEX_FILE).write_bytes((d / INDEX_FILE).read_bytes()[:100]), INDEX_FILE, "FAISS"),
        (lambda d: (d / INDEX_FILE).write_bytes(b""), INDEX_FILE, "FAISS"),
        (lambda d: (d / RECORDS_FILE).unlink(), RECORDS_FILE, "missing"),
        (lambda d: (d / RECORDS_FILE).write_text('{"caption": "x"}\n', encoding="utf-8"), RECORDS_FILE, "line 1"),
        (lambda d: (d / RECORDS_FILE).write_text("not json\n", encoding="utf-8"), RECORDS_FILE, "line 1"),
    ],
    ids=["no-index", "garbage", "truncated", "empty", "no-records", "incomplete-record", "bad-json"],
)
def test_a_missing_or_corrupt_part_is_an_input_error_naming_it(tmp_path, damage, broken_file, reason) -> None:
    RetrievalIndex.build(clustered(50, 8, 2, seed=5), records_for(50), RetrievalSettings()).save(tmp_path)
    damage(tmp_path)
    with pytest.raises(InputError) as error:
        RetrievalIndex.load(tmp_path, expected_dim=8)
    assert error.value.path == str(tmp_path / broken_file)
    assert reason in error.value.reason


def test_auto_builds_exact_up_to_the_threshold_and_approximate_above() -> None:
    vectors = clustered(100, 8, 3, seed=6)
    assert RetrievalIndex.build(vectors, records_for(100), RetrievalSettings(exact_max_vectors=100)).kind == "flat"
    above = RetrievalSettings(exact_max_vectors=99)
    assert RetrievalIndex.build(vectors, records_for(100), above).kind == "ivf"
    hnsw = RetrievalSettings(exact_max_vectors=99, approximate_type="hnsw")
    assert RetrievalIndex.build(vectors, records_for(100), hnsw).kind == "hnsw"


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_find_the_exact_nearest_neighbour_on_clustered_data(tmp_path, kind) -> None:
    base, queries = clustered(4000, 32, 20, seed=7), clustered(200, 32, 20, seed=8)
    settings = RetrievalSettings(index_type=kind)
    approximate = RetrievalIndex.build(base, records_for(4000), settings)
    exact = RetrievalIndex.build(base, records_for(4000), RetrievalSettings(index_type="flat"))
    approximate.save(tmp_path)
    reloaded = RetrievalIndex.load(tmp_path, expected_dim=32, settings=settings)
    assert reloaded.kind == kind

    truth = [row[0].record.source for row in exact.search(queries, 1)]
    for index in (approximate, reloaded):
        found = [{n.record.source for n in row} for row in index.search(queries, 5)]
        recall_at_5 = np.mean([t in f for t, f in zip(truth, found, strict=True)])
        assert recall_at_5 >= 0.9
