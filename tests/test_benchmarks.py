"""Smoke tests of the benchmark scripts at their smallest settings: they run and end with a ratio line.

The figures themselves are not asserted (no timed assertions); only that each script
completes on real components and reports its headline ratio as its last line.
"""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import rainbow
from PIL import Image

from insarwatch.phase import GREY, SYNTHETIC
from insarwatch.synthetic.render import hue_wheel, write_rgba_png

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
RATIO = re.compile(r"^ratio=(\d+(\.\d+)?|inf)$")


def run_script(name: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    main = runpy.run_path(str(BENCHMARKS / name), run_name="benchmark")["main"]
    assert main(argv) == 0
    return capsys.readouterr().out.strip().splitlines()


@pytest.mark.parametrize("arch", ["blip", "git"])
def test_caption_throughput_tiny_model_reports_both_paths_and_a_ratio(capsys, tmp_path, arch) -> None:
    lines = run_script(
        "caption_throughput.py",
        ["--tiny", "--quick", "--tiles", "2", "--tokens", "3", "--beams", "2", "--batch-size", "2",
         "--arch", arch, "--model-dir", str(tmp_path / arch)],
        capsys,
    )
    assert RATIO.match(lines[-1]), lines[-1]
    assert any("baseline" in line for line in lines) and any("insarwatch" in line for line in lines)
    assert "identical captions: 2/2" in "\n".join(lines)


def test_faiss_scale_smallest_size_reports_every_index_and_a_ratio(capsys) -> None:
    lines = run_script(
        "faiss_scale.py",
        ["--sizes", "2000", "--data", "clustered", "--queries", "64", "--single-queries", "8"],
        capsys,
    )
    assert RATIO.match(lines[-1]), lines[-1]
    table = "\n".join(lines)
    for kind in ("flat (auto)", "hnsw", "ivf"):
        assert kind in table


def test_daemon_load_small_flood_is_processed_exactly_once_and_reports_a_ratio(capsys, tmp_path) -> None:
    lines = run_script(
        "daemon_load.py",
        ["--frames", "12", "--tokens", "3", "--beams", "1", "--batch-size", "4", "--workdir", str(tmp_path)],
        capsys,
    )
    assert RATIO.match(lines[-1]), lines[-1]
    table = "\n".join(lines)
    assert "12 / 0 / 0" in table
    assert re.search(r"every key tracked exactly once\s*│\s*True", table), table


def test_triage_with_a_micro_model_reports_each_threshold_and_a_ratio(capsys, micro_demo) -> None:
    workdir, _, _ = micro_demo  # the demo's drop, training set and model, as the script expects; it only reads them
    lines = run_script("triage.py", ["--workdir", str(workdir), "--thresholds", "0.5", "0.99"], capsys)
    assert RATIO.match(lines[-1]), lines[-1]
    output = "\n".join(lines)
    assert "chosen min_similarity" in output
    assert {"frames", "patches"} <= set(re.findall(r"│\s*(frames|patches)\s*│", output))


def test_renderings_counts_each_detected_table_per_folder_and_the_known_share(capsys, tmp_path) -> None:
    (tmp_path / "c1" / "1").mkdir(parents=True)
    rings = np.hypot(*np.mgrid[:64, :64] - 32.0) / 4
    for index in range(2):  # insarwatch's former synthetic palette, still read
        Image.fromarray(SYNTHETIC.draw(rings + index).astype(np.uint8)).save(tmp_path / "c1" / "1" / f"{index}.png")
    everywhere = np.zeros(rings.shape, dtype=bool)
    write_rgba_png(tmp_path / "c1" / "0" / "rgba.png", hue_wheel(rings, everywhere), everywhere)  # a hue wheel
    fringes = np.hypot(*np.mgrid[:64, :64] - 32.0) / 3
    amplitude = np.random.default_rng(0).uniform(0.35, 1.0, fringes.shape)
    Image.fromarray(rainbow(fringes, amplitude)).save(tmp_path / "c1" / "0" / "rainbow.png")
    (tmp_path / "s1" / "0").mkdir(parents=True)
    ramp = np.tile(np.linspace(-3, 3, 64), (64, 1))
    Image.fromarray(GREY.draw(ramp)[..., 0], "L").save(tmp_path / "s1" / "0" / "grey.png")
    lines = run_script("renderings.py", ["--realdata", str(tmp_path)], capsys)
    assert lines[-1] == "ratio=0.8000", lines[-1]
    rows = {cells[0]: cells[1:8] for cells in
            ([cell.strip() for cell in line.split("│")[1:-1]] for line in lines if line.startswith("│"))}
    # images, pha, phaold, grey, synthetic, rainbow, unknown
    assert rows["c1/1"][:7] == ["2", "0", "0", "0", "2", "0", "0"]
    assert rows["c1/0"][:7] == ["2", "0", "0", "0", "0", "1", "1"]
    assert rows["s1/0"][:7] == ["1", "0", "0", "1", "0", "0", "0"]
    # The rainbow evidence table: the rainbow's brightness is its amplitude, the hue wheel's is constant.
    assert rows["rainbow"][0] == "1" and rows["unknown"][0] == "1"


def test_backfill_scale_smallest_archive_matches_the_daemon_and_reports_a_ratio(capsys, tmp_path) -> None:
    lines = run_script(
        "backfill_scale.py",
        ["--frames", "1", "--pairs", "2", "--workers", "1", "--tokens", "3", "--batch-size", "4",
         "--workdir", str(tmp_path)],
        capsys,
    )
    assert RATIO.match(lines[-1]), lines[-1]
    table = "\n".join(lines)
    assert "backfill, 1 Ray worker" in table and "daemon (watch --once)" in table
    assert re.search(r"│\s*True\s*│", table) and "False" not in table, table


def test_train_autocast_reports_both_precisions_and_a_ratio(capsys) -> None:
    lines = run_script("train_autocast.py", ["--device", "cpu", "--preset", "tiny", "--batch-size", "2",
                                             "--steps", "1", "--precision", "bf16"], capsys)
    assert RATIO.match(lines[-1]), lines[-1]
    table = "\n".join(lines)
    assert "fp32" in table and "autocast bfloat16" in table


def gpu_check(device: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("GPU_CHECK_DEVICE", None)
    if device is not None:
        env["GPU_CHECK_DEVICE"] = device
    return subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh")], env=env, capture_output=True, text=True,
                          timeout=1200)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script would run for real")
def test_gpu_check_without_cuda_stops_at_once_saying_so() -> None:
    result = gpu_check(None)
    assert result.returncode == 1
    assert "gpu_check: FAILED: torch sees no CUDA device" in result.stderr
    assert "===" not in result.stdout


def test_gpu_check_refuses_an_unknown_device() -> None:
    result = gpu_check("tpu")
    assert result.returncode == 1
    assert "GPU_CHECK_DEVICE must be cuda or cpu, not 'tpu'" in result.stderr


def test_gpu_check_smoke_run_on_the_cpu_prints_every_step_with_its_ratio() -> None:
    result = gpu_check("cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    steps = re.findall(r"^(.+): ratio=\d+(?:\.\d+)?$", result.stdout, re.MULTILINE)
    assert steps == ["captioning throughput, BLIP", "captioning throughput, GIT", "training steps, autocast vs fp32",
                     "FAISS search (on the GPU when FAISS sees one)", "daemon on a small drop"]
    assert result.stdout.rstrip().endswith("gpu_check: every step passed on cpu")


def test_soak_smoke_loses_nothing_and_duplicates_nothing_under_faults(capsys, tmp_path) -> None:
    # Seed 1 draws SIGKILL first; the first fault (3 s in) always lands, later ones as the load allows.
    lines = run_script(
        "soak.py", ["--minutes", "0.25", "--rate", "40", "--fault-every", "3", "--seed", "1", "--workdir",
                    str(tmp_path)], capsys,
    )
    assert RATIO.match(lines[-1]), lines[-1]
    table = "\n".join(lines)
    sigkill, _, second = (int(n) for n in re.search(r"faults \(sigkill / sigterm / second daemon\)\s*│\s*"
                                                     r"(\d+) / (\d+) / (\d+)", table).groups())
    assert sigkill >= 1, table
    assert re.search(rf"second daemon refused\s*│\s*{second} of {second} ", table), table
    assert re.search(r"frames lost\s*│\s*0 ", table), table
    assert re.search(r"duplicates\s*│\s*0 ", table), table


def test_real_tiles_scores_every_call_on_labelled_folders_and_reports_a_ratio(capsys, tmp_path, tiny_var_dir,
                                                                             tiny_index_tiles) -> None:
    for label, indices in (("1", (0, 2, 4)), ("0", (1, 3, 5))):
        (tmp_path / "real" / "c1" / label).mkdir(parents=True)
        for i in indices:
            Image.fromarray(tiny_index_tiles[i]).save(tmp_path / "real" / "c1" / label / f"{i}.png")
    lines = run_script("real_tiles.py", ["--model", str(tiny_var_dir / "models" / "current"), "--realdata",
                                         str(tmp_path / "real"), "--no-retrieval"], capsys)
    assert RATIO.match(lines[-1]), lines[-1]
    table = "\n".join(lines)
    assert f"skipped {tmp_path / 'real' / 's1'}: absent" in table
    rows = [line.split("│")[1:4] for line in lines if line.startswith("│")]
    assert [[cell.strip() for cell in row] for row in rows] == [
        ["c1", "3/3", call] for call in ("caption", "vote", "alert", "alert_or_review")]


def test_drop_alerts_counts_every_interferogram_of_the_drop_once_and_reports_a_ratio(capsys, tmp_path,
                                                                                     tiny_var_dir) -> None:
    lines = run_script("drop_alerts.py", ["--model", str(tiny_var_dir / "models" / "current"), "--frames", "2",
                                          "--seed", "3", "--workdir", str(tmp_path / "bench")], capsys)
    assert RATIO.match(lines[-1]), lines[-1]
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines if line.startswith("│")]
    # Frame 0 deforms, frame 1 does not (write_drop alternates); each row counts its interferograms.
    assert [row[0] for row in rows][0] == "quiet" and rows[1][0].startswith("deforming, ")
    assert sum(int(row[1]) for row in rows) == 2
    assert re.match(r"quiet alert rate \d\.\d{3} \(target <= 0\.05\), any-tile rule \d\.\d{3}$", lines[-2]), lines[-2]
