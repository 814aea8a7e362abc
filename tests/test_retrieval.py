"""The FAISS retrieval index: exact search, approximate recall, persistence and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from insarwatch.config import RetrievalSettings
from insarwatch.errors import InputError
from insarwatch.registry import ModelVersion
from insarwatch.retrieval import IndexRecord, RetrievalIndex

INDEX_FILE, RECORDS_FILE = ModelVersion.INDEX_FILE, ModelVersion.RECORDS_FILE
# The FAISS tests search the vectors as given: no transform learnt from them.
RAW = RetrievalSettings(embedding="pooled")


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
    index = RetrievalIndex.build(base, records_for(300), RAW)
    assert index.kind == "flat" and len(index) == 300 and index.dim == 24

    results = index.search(queries, 5)

    cosine = unit(queries) @ unit(base).T
    for row, neighbours in zip(cosine, results, strict=True):
        expected = np.argsort(-row)[:5]
        assert [n.record.source for n in neighbours] == [str(1000 + i) for i in expected]
        np.testing.assert_allclose([n.similarity for n in neighbours], row[expected], atol=1e-5)


def test_k_larger_than_index_returns_every_record_once() -> None:
    index = RetrievalIndex.build(unit(np.eye(3, 8, dtype=np.float32)), records_for(3), RAW)
    (neighbours,) = index.search(np.ones((1, 8), dtype=np.float32), 10)
    assert sorted(n.record.source for n in neighbours) == ["1000", "1001", "1002"]


def test_save_load_round_trip_keeps_vectors_records_and_answers(tmp_path) -> None:
    vectors = clustered(200, 16, 5, seed=1)
    records = records_for(200)
    index = RetrievalIndex.build(vectors, records, RAW)
    index.save(tmp_path)

    loaded = RetrievalIndex.load(tmp_path, expected_dim=16)

    assert loaded.records == tuple(records)
    queries = clustered(10, 16, 5, seed=2)
    before, after = index.search(queries, 5), loaded.search(queries, 5)
    assert [[n.record for n in row] for row in before] == [[n.record for n in row] for row in after]
    assert (tmp_path / RECORDS_FILE).read_text(encoding="utf-8").count("\n") == 200


def test_load_refuses_an_index_of_another_dimension(tmp_path) -> None:
    RetrievalIndex.build(clustered(20, 16, 2, seed=3), records_for(20), RAW).save(tmp_path)
    with pytest.raises(InputError) as error:
        RetrievalIndex.load(tmp_path, expected_dim=32)
    assert error.value.path == str(tmp_path / INDEX_FILE)
    assert "dimension 16" in error.value.reason and "32" in error.value.reason


def test_load_refuses_records_that_do_not_match_the_vectors(tmp_path) -> None:
    RetrievalIndex.build(clustered(20, 16, 2, seed=4), records_for(20), RAW).save(tmp_path)
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
    RetrievalIndex.build(clustered(50, 8, 2, seed=5), records_for(50), RAW).save(tmp_path)
    damage(tmp_path)
    with pytest.raises(InputError) as error:
        RetrievalIndex.load(tmp_path, expected_dim=8)
    assert error.value.path == str(tmp_path / broken_file)
    assert reason in error.value.reason


def test_auto_builds_exact_up_to_the_threshold_and_approximate_above() -> None:
    vectors = clustered(100, 8, 3, seed=6)
    assert RetrievalIndex.build(vectors, records_for(100), RetrievalSettings(embedding="pooled", exact_max_vectors=100)).kind == "flat"
    above = RetrievalSettings(embedding="pooled", exact_max_vectors=99)
    assert RetrievalIndex.build(vectors, records_for(100), above).kind == "ivf"
    hnsw = RetrievalSettings(embedding="pooled", exact_max_vectors=99, approximate_type="hnsw")
    assert RetrievalIndex.build(vectors, records_for(100), hnsw).kind == "hnsw"


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_find_the_exact_nearest_neighbour_on_clustered_data(tmp_path, kind) -> None:
    base, queries = clustered(4000, 32, 20, seed=7), clustered(200, 32, 20, seed=8)
    settings = RetrievalSettings(embedding="pooled", index_type=kind)
    approximate = RetrievalIndex.build(base, records_for(4000), settings)
    exact = RetrievalIndex.build(base, records_for(4000), RetrievalSettings(embedding="pooled", index_type="flat"))
    approximate.save(tmp_path)
    reloaded = RetrievalIndex.load(tmp_path, expected_dim=32, settings=settings)
    assert reloaded.kind == kind

    truth = [row[0].record.source for row in exact.search(queries, 1)]
    for index in (approximate, reloaded):
        found = [{n.record.source for n in row} for row in index.search(queries, 5)]
        recall_at_5 = np.mean([t in f for t, f in zip(truth, found, strict=True)])
        assert recall_at_5 >= 0.9


def common_direction(n: int, dim: int, seed: int) -> tuple[np.ndarray, list[bool]]:
    """Vectors as one model's pooled outputs are: a large shared component (cosine ~0.99
    between any two), a few strong nuisance directions (rendering, brightness) and a weak
    class-dependent one; labels alternate."""
    rng = np.random.default_rng(seed)
    labels = [i % 2 == 0 for i in range(n)]
    axes = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    shared = axes[:, 0] * 40
    nuisance = rng.normal(size=(n, 3)) @ axes[:, 1:4].T * 2.0
    signal = np.outer([0.3 if label else -0.3 for label in labels], axes[:, 4])
    rows = shared + nuisance + signal + rng.normal(size=(n, dim)) * 0.05
    return rows.astype(np.float32), labels


def agreement(index: RetrievalIndex, queries: np.ndarray, labels: list[bool], k: int = 5) -> float:
    found = index.search(queries, k)
    return float(np.mean([[n.record.deformation == label for n in row] for row, label in zip(found, labels)]))


def test_whitening_makes_neighbours_of_near_identical_embeddings_informative() -> None:
    vectors, _ = common_direction(600, 32, seed=7)
    queries, labels = vectors[400:], [i % 2 == 0 for i in range(400, 600)]
    vectors = vectors[:400]
    records = records_for(400)  # deformation alternates as the labels do
    def built(embedding: str, components: int | None = None) -> RetrievalIndex:
        return RetrievalIndex.build(vectors, records, RetrievalSettings(embedding=embedding,
                                                                         whiten_components=components))

    pooled = built("pooled")
    similarities = np.array([[n.similarity for n in row] for row in pooled.search(queries, 5)])
    assert similarities.min() > 0.98  # the symptom: every neighbour looks the same
    baseline = agreement(pooled, queries, labels)
    assert baseline < 0.7
    assert agreement(built("centred"), queries, labels) > baseline
    # Whitening gives the weak class axis the weight of the strong nuisance ones; keeping the
    # leading axes also drops the noise that full whitening amplifies.
    assert agreement(built("whitened"), queries, labels) > agreement(built("centred"), queries, labels)
    assert agreement(built("whitened", 8), queries, labels) > 0.95


def test_the_transform_is_stored_with_the_index_and_applied_to_queries_after_loading(tmp_path) -> None:
    vectors, labels = common_direction(300, 24, seed=8)
    settings = RetrievalSettings(embedding="whitened", whiten_components=8)
    index = RetrievalIndex.build(vectors, records_for(300), settings)
    index.save(tmp_path)
    assert (tmp_path / ModelVersion.INDEX_TRANSFORM_FILE).is_file()
    loaded = RetrievalIndex.load(tmp_path, expected_dim=24)
    assert (loaded.dim, loaded.transform.output_dim) == (24, 8)
    queries = vectors[:20] + 0.01
    before, after = index.search(queries, 5), loaded.search(queries, 5)
    assert [[(n.record, round(n.similarity, 5)) for n in row] for row in before] == \
        [[(n.record, round(n.similarity, 5)) for n in row] for row in after]
    with pytest.raises(InputError) as error:
        RetrievalIndex.load(tmp_path, expected_dim=8)
    assert "dimension 24" in error.value.reason


def test_an_index_saved_without_a_transform_searches_raw_embeddings(tmp_path) -> None:
    vectors = clustered(60, 16, 3, seed=9)
    RetrievalIndex.build(vectors, records_for(60), RetrievalSettings(embedding="whitened")).save(tmp_path)
    (tmp_path / ModelVersion.INDEX_TRANSFORM_FILE).unlink()
    # What an older version holds: the raw normalised vectors, no transform file.
    import faiss

    old = faiss.IndexFlatIP(16)
    old.add(vectors)
    faiss.write_index(old, str(tmp_path / INDEX_FILE))
    loaded = RetrievalIndex.load(tmp_path, expected_dim=16)
    (row,) = loaded.search(vectors[:1], 1)
    assert row[0].record.source == "1000" and row[0].similarity == pytest.approx(1.0, abs=1e-5)


def test_a_damaged_transform_is_an_input_error_naming_it(tmp_path) -> None:
    RetrievalIndex.build(clustered(40, 8, 2, seed=10), records_for(40), RetrievalSettings(embedding="centred")).save(tmp_path)
    (tmp_path / ModelVersion.INDEX_TRANSFORM_FILE).write_bytes(b"garbage")
    with pytest.raises(InputError) as error:
        RetrievalIndex.load(tmp_path, expected_dim=8)
    assert error.value.path == str(tmp_path / ModelVersion.INDEX_TRANSFORM_FILE)


def test_the_detector_is_fitted_with_the_index_stored_beside_it_and_scores_queries(tmp_path) -> None:
    # Deforming examples lean along one axis, quiet ones the other way: a line separates them.
    rng = np.random.default_rng(12)
    labels = np.arange(400) % 2 == 0  # records_for's labels
    vectors = unit(rng.normal(size=(400, 16)) + np.where(labels, 2.5, -2.5)[:, None] * np.eye(16)[0])
    index = RetrievalIndex.build(vectors, records_for(400), RetrievalSettings(embedding="whitened"))
    queries = unit(rng.normal(size=(200, 16)) + np.repeat([2.5, -2.5], 100)[:, None] * np.eye(16)[0])
    scores = np.array(index.detect(queries))
    assert (scores[:100] > 0.5).mean() > 0.9 and (scores[100:] < 0.5).mean() > 0.9
    assert np.all((scores > 0) & (scores < 1))
    index.save(tmp_path)
    assert (tmp_path / ModelVersion.INDEX_DETECTOR_FILE).is_file()
    assert RetrievalIndex.load(tmp_path, expected_dim=16).detect(queries) == pytest.approx(list(scores))


def test_an_index_of_one_label_or_saved_before_the_detector_detects_nothing(tmp_path) -> None:
    vectors = clustered(40, 8, 2, seed=13)
    quiet_only = [IndexRecord("quiet", False, (), (), str(i)) for i in range(40)]
    index = RetrievalIndex.build(vectors, quiet_only, RetrievalSettings(embedding="centred"))
    assert index.detector is None and index.detect(vectors[:3]) == [None, None, None]
    RetrievalIndex.build(vectors, records_for(40), RetrievalSettings(embedding="centred")).save(tmp_path)
    (tmp_path / ModelVersion.INDEX_DETECTOR_FILE).unlink()  # what an older version holds
    assert RetrievalIndex.load(tmp_path, expected_dim=8).detect(vectors[:2]) == [None, None]


def test_a_damaged_detector_is_an_input_error_naming_it(tmp_path) -> None:
    RetrievalIndex.build(clustered(40, 8, 2, seed=14), records_for(40), RetrievalSettings(embedding="centred")).save(tmp_path)
    detector = tmp_path / ModelVersion.INDEX_DETECTOR_FILE
    detector.write_bytes(b"garbage")
    with pytest.raises(InputError) as error:
        RetrievalIndex.load(tmp_path, expected_dim=8)
    assert error.value.path == str(detector)
