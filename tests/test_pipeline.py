"""The processor's preparation lanes, with a real tiny BLIP, real SQLite and synthetic frames.

On a CPU the model already uses every core, so frames are prepared between batches, only
as many as the next batch needs; beside a GPU they are prepared ahead in threads, up to
``watch.queue_max``.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from insarwatch.config import BatchSettings, CaptioningSettings, Settings
from insarwatch.describe import load_bundle
from insarwatch.intake import Intake
from insarwatch.processor import InlineExecutor, Processor, reader_threads
from insarwatch.registry import ModelStore
from insarwatch.store import Store
from insarwatch.synthetic.drop import write_drop

NOW = datetime(2026, 11, 24, tzinfo=timezone.utc)


def test_frames_are_prepared_between_batches_on_a_cpu_and_in_threads_beside_a_gpu(tmp_path: Path) -> None:
    def workers(device: str, configured: int | None = None) -> int:
        return reader_threads(Settings(var_dir=tmp_path, drop_dir=tmp_path,
                                        captioning=CaptioningSettings(device=device),
                                        batch=BatchSettings(reader_threads=configured)))

    assert workers("cpu") == 0
    assert workers("cuda") == 2
    assert workers("cpu", 3) == 3


def test_the_inline_executor_runs_the_job_at_once_and_keeps_its_exception() -> None:
    executor = InlineExecutor()
    assert executor.submit(sum, [1, 2, 3]).result() == 6
    failed = executor.submit(int, "not a number")
    assert failed.done() and isinstance(failed.exception(), ValueError)


@pytest.mark.parametrize("workers, claimed_in_first_step", [(0, 4), (2, 12)])
def test_claims_follow_the_preparation_lane(tmp_path: Path, tiny_var_dir: Path, workers: int,
                                            claimed_in_first_step: int) -> None:
    drop = tmp_path / "drop"
    write_drop(drop, frames=6, seed=3, size=(224, 224), pairs=2)  # twelve single-tile interferograms
    settings = Settings(var_dir=tiny_var_dir, drop_dir=drop,
                        batch=BatchSettings(tiles=4, max_wait_seconds=0, reader_threads=workers),
                        captioning=CaptioningSettings(num_beams=1, max_new_tokens=4))
    bundle = load_bundle(ModelStore(settings.models_dir).current(), settings, require_index=True)
    with Store(settings.state_db) as store:
        assert Intake(drop, store, settle_seconds=0).reconcile(NOW) == 12
        processor = Processor(settings, store, lambda: bundle, lambda: NOW)
        try:
            processor.step(flush=False, monotonic=0.0)
            counts = store.counts()
            assert counts["queued"] == 12 - claimed_in_first_step
            for _ in range(3000):  # threads may still be preparing: poll, at most ~30 s
                if counts["done"] + counts["rejected"] == 12:
                    break
                if not processor.step(flush=True, monotonic=0.0):
                    time.sleep(0.01)
                counts = store.counts()
        finally:
            processor.close()
        assert counts["queued"] == counts["processing"] == 0 and processor.held == 0


def run_until_idle(processor: Processor) -> None:
    for _ in range(100):
        if not processor.step(flush=True, monotonic=0.0):
            return


def test_a_frame_rejected_while_its_writer_paused_is_read_again_once_complete(tmp_path: Path,
                                                                              tiny_var_dir: Path) -> None:
    drop = tmp_path / "drop"
    write_drop(drop, frames=1, seed=3, size=(224, 224), pairs=1)
    (path,) = drop.rglob("*.geo.diff.png")
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # the writer stalls past settle_seconds
    os.utime(path, ns=(0, 0))
    settings = Settings(var_dir=tiny_var_dir, drop_dir=drop, batch=BatchSettings(tiles=4, reader_threads=0),
                        captioning=CaptioningSettings(num_beams=1, max_new_tokens=4))
    bundle = load_bundle(ModelStore(settings.models_dir).current(), settings, require_index=True)
    with Store(settings.state_db) as store:
        intake = Intake(drop, store, settle_seconds=0)
        processor = Processor(settings, store, lambda: bundle, lambda: NOW)
        try:
            assert intake.reconcile(NOW) == 1
            run_until_idle(processor)
            (rejected,) = store.in_state("rejected")
            assert rejected.reason == "decode" and "truncated PNG" in rejected.error
            assert intake.reconcile(NOW) == 0  # unchanged: not read again
            path.write_bytes(whole)  # the writer resumes and finishes
            os.utime(path, ns=(10**9, 10**9))
            assert intake.reconcile(NOW) == 1
            run_until_idle(processor)
        finally:
            processor.close()
        assert store.counts()["done"] == 1 and store.get(rejected.key).attempts == 1
