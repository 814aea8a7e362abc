"""Helpers more than one test module uses: sample inputs built the way production meets them.

- Hephaestus-style annotations and interferogram PNGs (plain json + Pillow), for the
  imaging, hephaestus and prepare tests. PNGs follow the pixel conventions the synthetic
  renderer uses: a 256-entry cyclic palette whose index 0 is black and is the PNG's
  ``transparency`` (no-data) entry, phase mapped to indices 1..255.
- An alert built the way the daemon builds one, for the report and delivery tests:
  captions go through the real ``parse_caption`` and ``decide_tile``/``decide_interferogram``,
  neighbours are real ``retrieval.Neighbour`` records, and the interferogram is a P-mode
  PNG with concentric (Mogi-like) fringes written into a LiCSAR layout.
- A running daemon (daemon and fault tests): its configuration, frames dropped the ways a
  real drop receives them, the store's states, systemd's notify socket, a full disk.
- ``process`` (a Processor run in the test's thread), ``watch_once`` (the daemon's ``--once``
  run in this process, for restarts after a fault), ``wait_for`` (daemon and intake tests),
  the micro training presets (training and demo tests) and ``systemd-analyze verify`` (systemd
  and deploy tests).
- ``shared_path``: a file or folder of the project's real data in ``../shared`` (real LiCSAR
  tiles and frames, the real Hephaestus annotations), or a skip naming what is missing.
  ``.ci/run`` fails when ``../shared`` is absent, so CI never skips these tests.
- ``Counter`` (a forward hook counting a module's calls) and the ways a saved model
  directory gets damaged, for the captioner tests of every architecture.
"""

from __future__ import annotations

import colorsys
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

FRAME = "124D_04854_171313"


# --------------------------------------------------------------------------- Hephaestus samples


def palette() -> np.ndarray:
    """256x3 uint8: index 0 black (no data), 1..255 around the hue circle, never black."""
    colours = np.zeros((256, 3), dtype=np.uint8)
    for index in range(1, 256):
        colours[index] = [round(255 * c) for c in colorsys.hsv_to_rgb((index - 1) / 255, 0.8, 0.9)]
    return colours


def phase_indices(phase: np.ndarray) -> np.ndarray:
    """Wrapped phase (any real values, radians) → palette indices 1..255."""
    wrapped = np.mod(phase, 2 * np.pi) / (2 * np.pi)
    return (1 + np.minimum((wrapped * 255).astype(np.int64), 254)).astype(np.uint8)


def fringes(height: int = 224, width: int = 224, spacing: float = 12.0) -> np.ndarray:
    """Concentric (Mogi-like) fringes as palette indices."""
    y, x = np.mgrid[0:height, 0:width]
    return phase_indices(np.hypot(x - width / 2, y - height / 2) / spacing * 2 * np.pi)


def save_p(path: Path, indices: np.ndarray) -> Path:
    """A P-mode PNG with the cyclic palette and index 0 as the transparency entry."""
    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette(palette().ravel().tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", transparency=0)
    return path


def save_rgb(path: Path, indices: np.ndarray, alpha: np.ndarray | None = None) -> Path:
    """The same picture as RGB, or RGBA when ``alpha`` is given."""
    rgb = palette()[indices]
    array = rgb if alpha is None else np.dstack([rgb, alpha.astype(np.uint8)])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")
    return path


def rainbow(truth: np.ndarray, brightness: np.ndarray, saturation: float = 0.6) -> np.ndarray:
    """HxWx3 uint8: hue = phase on a wheel of ``saturation``, brightness = amplitude (0-1), as the
    rainbow-on-amplitude previews among the real c1 tiles are drawn."""
    hsv = np.stack([np.mod(truth, 2 * np.pi) / (2 * np.pi) * 255, np.full(truth.shape, saturation * 255),
                    brightness * 255], axis=-1)
    return np.array(Image.fromarray(np.rint(hsv).astype(np.uint8), "HSV").convert("RGB"))


def annotation(unique_id: int, *, deformation: bool = False, **fields: Any) -> dict[str, Any]:
    """A clean annotation (passes every rule); ``fields`` override any key."""
    record: dict[str, Any] = {
        "uniqueID": unique_id,
        "frameID": FRAME,
        "primary_date": "20210101",
        "secondary_date": "20210113",
        "corrupted": 0,
        "processing_error": 0,
        "glacier_fringes": 0,
        "orbital_fringes": 0,
        "atmospheric_fringes": 1,
        "low_coherence": 0,
        "no_info": 0,
        "image_artifacts": 0,
        "is_crowd": 0,
        "label": ["Deformation"] if deformation else ["Non_Deformation"],
        "activity_type": ["Mogi"] if deformation else [],
        "intensity_level": ["High"] if deformation else [],
        "phase": "Unrest" if deformation else "Rest",
        "confidence": 0.8,
        "segmentation_mask": [[10, 10, 60, 10, 60, 60]] if deformation else [],
        "caption": (
            "A mogi-type deformation pattern of high intensity can be detected in the center of the image."
            if deformation
            else "Stratification effect can be detected on the left side. No deformation activity can be detected."
        ),
    }
    record.update(fields)
    return record


def write_annotation(root: Path, record: dict[str, Any], name: str | None = None) -> Path:
    path = root / "annotations" / (name or f"{record['uniqueID']}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record), encoding="utf-8")
    return path


def flat_sample(root: Path, record: dict[str, Any], mode: str = "P") -> None:
    """Annotation plus ``images/<id>.png`` in the requested mode (P, RGB or RGBA)."""
    write_annotation(root, record)
    image = root / "images" / f"{record['uniqueID']}.png"
    indices = fringes(64, 64, spacing=8.0 + record["uniqueID"] % 5)
    if mode == "P":
        save_p(image, indices)
    elif mode == "RGBA":
        save_rgb(image, indices, alpha=np.full(indices.shape, 255))
    else:
        save_rgb(image, indices)


# --------------------------------------------------------------------------- a real alert


VOLCANO = "Etna"
PRIMARY, SECONDARY = date(2026, 11, 2), date(2026, 11, 14)
RECEIVED = datetime(2026, 11, 15, 6, 0, tzinfo=timezone.utc)
PROCESSED = datetime(2026, 11, 15, 6, 2, 30, tzinfo=timezone.utc)
ALERT_CAPTION = "a dyke - type deformation pattern of high intensity can be detected on the top side of the image."
QUIET_CAPTION = "no deformation activity can be detected."
SIZE = (672, 448)  # 3 x 2 tiles of 224 px
FLAGGED_BOX = (224, 0, 448, 224)


def write_interferogram(drop: Path) -> Path:
    """Concentric fringes centred in the flagged tile, as a P-mode LiCSAR ``.geo.diff.png``."""
    pair = f"{PRIMARY:%Y%m%d}_{SECONDARY:%Y%m%d}"
    path = drop / FRAME / "interferograms" / pair / f"{pair}.geo.diff.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:SIZE[1], 0:SIZE[0]]
    radius = np.hypot(x - 336, y - 112)
    phase = (radius / 18) % 1.0
    indices = (1 + phase * 254).astype(np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette().ravel().tolist())
    image.save(path, transparency=0)
    return path


def neighbours(deforming: bool, caption: str = ALERT_CAPTION) -> tuple:
    from insarwatch.retrieval import IndexRecord, Neighbour

    if deforming:
        records = [IndexRecord(caption, True, ("Dyke",), ("High",), f"hephaestus/{n}") for n in (101, 102, 103)]
    else:
        records = [IndexRecord(QUIET_CAPTION, False, (), (), f"hephaestus/{n}") for n in (201, 202, 203)]
    return tuple(Neighbour(similarity, record) for similarity, record in zip((0.94, 0.91, 0.88), records, strict=True))


def make_alert(drop: Path, *, caption: str = ALERT_CAPTION, model_version: str = "v1", diff_png: Path | None = None):
    """A real decision over a 3 x 2 tiled frame in which one tile reports ``caption``."""
    from insarwatch.alerts import Alert, alert_key, decide_interferogram, decide_tile
    from insarwatch.config import Settings
    from insarwatch.findings import parse_caption
    from insarwatch.imaging import QualityCheck

    settings = Settings()
    path = diff_png if diff_png is not None else write_interferogram(drop)
    tiles = []
    for index in range(6):
        left, top = (index % 3) * 224, (index // 3) * 224
        box = (left, top, left + 224, top + 224)
        text = caption if box == FLAGGED_BOX else QUIET_CAPTION
        tiles.append(decide_tile(index, box, text, parse_caption(text), neighbours(box == FLAGGED_BOX, text),
                                 settings.alerts))
    quality = (
        QualityCheck("nodata_fraction", 0.0, 0.25, True),
        QualityCheck("coherence_mean", 0.71, 0.25, True),
        QualityCheck("artifact_score", 0.02, 0.5, True),
    )
    return Alert(
        key=alert_key(FRAME, PRIMARY, SECONDARY, model_version), frame=FRAME, volcano=VOLCANO,
        primary=PRIMARY, secondary=SECONDARY, model_version=model_version,
        decision=decide_interferogram(tiles), quality=quality, received_at=RECEIVED,
        processed_at=PROCESSED, diff_png=path,
    )


# --------------------------------------------------------------------------- a running daemon


TERMINAL = {"done", "rejected", "quarantined"}
INSARWATCH = str(Path(sys.executable).with_name("insarwatch"))


def write_config(path: Path, var_dir: Path, drop_dir: Path, reader_threads: int = 0, extra: str = "",
                 **watch: float) -> Path:
    """A daemon configuration for tests; ``reader_threads`` 0 is the CPU default (frames read
    between batches), more exercises the threads a GPU host reads in; ``watch`` sets any
    ``[watch]`` key and ``extra`` is TOML appended at the end (more sections)."""
    watch = {"settle_seconds": 0.6, "rescan_interval_seconds": 3600, **watch}
    watch_lines = "\n".join(f"{key} = {value}" for key, value in watch.items())
    # review_vote 0: the untrained tiny model writes unrecognised text, and every such tile
    # then goes to review, so each interferogram raises exactly one message to deliver.
    path.write_text(f"""
var_dir = "{var_dir}"
drop_dir = "{drop_dir}"
[watch]
{watch_lines}
observer = "inotify"
[batch]
tiles = 4
max_wait_seconds = 0.2
reader_threads = {reader_threads}
[captioning]
num_beams = 2
max_new_tokens = 12
[alerts]
review_vote = 0.0
[digest]
enabled = false
{extra}
""", encoding="utf-8")
    return path


def place(source: Path, relative: Path, drop: Path, how: str) -> None:
    target = drop / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    data = (source / relative).read_bytes()
    if how == "copy":
        target.write_bytes(data)
    elif how == "pieces":
        with target.open("wb") as stream:
            for start in range(0, len(data), len(data) // 3 + 1):
                stream.write(data[start:start + len(data) // 3 + 1])
                stream.flush()
                time.sleep(0.25)
    else:
        staging = drop.parent / f".{relative.name}.part"
        staging.write_bytes(data)
        os.rename(staging, target)


def drop_all(frames: tuple[list[Path], Path], drop: Path, only: Callable[[int], bool]) -> int:
    relatives, source = frames
    ways = ("copy", "pieces", "move")
    count = 0
    # Siblings first, as LiCSAR's sync would leave them; then the interferogram itself.
    for number, relative in enumerate(sorted(relatives, key=lambda p: p.name.endswith(".geo.diff.png"))):
        if not only(number):
            continue
        place(source, relative, drop, ways[number % 3] if relative.name.endswith(".geo.diff.png") else "copy")
        count += relative.name.endswith(".geo.diff.png")
    return count


def watch_once(config: Path) -> int:
    """``insarwatch watch --once`` run in this process (the daemon the command builds), in a
    thread of its own so it installs no signal handlers here. For the restart after a fault,
    where what counts is the state the fault left; a fresh process would only add its ~5 s of
    imports. A fault the daemon must survive (a kill) still hits a real subprocess."""
    from concurrent.futures import ThreadPoolExecutor

    from insarwatch.config import load_settings
    from insarwatch.daemon import Daemon

    daemon = Daemon(load_settings(config), config, once=True)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(daemon.run).result(timeout=600)


def states(var_dir: Path) -> dict[str, str]:
    from insarwatch.store import Store

    if not (var_dir / "state.db").exists():
        return {}
    with Store(var_dir / "state.db", readonly=True) as store:
        return {record.key: record.state for state in ("discovered", "queued", "processing", "done", "rejected",
                                                       "failed", "quarantined")
                for record in store.in_state(state)}


class NotifySocket:
    """The receiving end of systemd's notify protocol, as the service manager holds it."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="iw-", dir="/tmp")  # AF_UNIX paths are short
        self.path = os.path.join(self.directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except TimeoutError:
                return self.messages

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def start(config: Path, notify: NotifySocket) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NOTIFY_SOCKET": notify.path, "INSARWATCH_CONFIG": str(config)}
    with (config.parent / "daemon.log").open("ab") as log:  # a file, so a full pipe never blocks it
        process = subprocess.Popen([INSARWATCH, "watch"], env=env, stderr=log)
    wait_for(lambda: any("READY=1" in m for m in notify.drain()), 60, "READY=1 on the notify socket")
    return process


def fill(disk: Path) -> Path:
    ballast = disk / "ballast"
    chunk = b"\0" * (1 << 20)
    with ballast.open("wb") as stream:
        try:
            while True:
                stream.write(chunk)
                stream.flush()
        except OSError:
            pass
    return ballast


class Webhook:
    """A real webhook receiver on loopback that answers only while ``gate`` is open (a slow
    channel is one whose gate the test holds shut), recording every POST it is sent."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.gate = threading.Event()
        self.gate.set()
        self.arrived = threading.Event()
        self.bodies: list[dict[str, Any]] = []
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's hook name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                webhook.bodies.append(body)
                webhook.arrived.set()
                webhook.gate.wait()
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/test"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def keys(self) -> list[str]:
        """The alert (or digest) key of each POST, in arrival order."""
        return [body[body["kind"]]["key"] for body in self.bodies]

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()


# --------------------------------------------------------------------------- waiting, training, systemd


def process(settings, store, bundle: Callable[[], Any], now: datetime, steps: int = 10) -> None:
    """Run a ``processor.Processor`` (in this thread) for ``steps`` flushing steps: enough for a few frames."""
    from insarwatch.processor import Processor

    processor = Processor(settings, store, bundle, lambda: now)
    try:
        for _ in range(steps):
            processor.step(flush=True, monotonic=0.0)
    finally:
        processor.close()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


MICRO_PRESET = {
    "name": "micro",
    "description": "test-sized BLIP",
    "model": {
        "image_size": 32,
        "vision": {"patch_size": 16, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                   "num_attention_heads": 2, "initializer_range": 0.02},
        "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                 "max_position_embeddings": 64},
        "vocab_size": 120,
        "max_caption_tokens": 40,
    },
    "training": {"epochs": 2, "batch_size": 8, "learning_rate": 0.003, "warmup_ratio": 0.1,
                 "val_max_new_tokens": 12, "seed": 3},
}

MICRO_GIT_PRESET = {
    **MICRO_PRESET,
    "name": "micro-git",
    "description": "test-sized GIT",
    "model": {**MICRO_PRESET["model"], "architecture": "git"},
}

INSTALLED_ENTRY_POINT = "/opt/insarwatch/venv/bin/insarwatch"
ENTRY_POINT = Path(sys.executable).parent / "insarwatch"


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing: apt-get install systemd"
    return found


def verify(*units: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` on unit files (with any ``<unit>.d/`` drop-ins beside them)."""
    return subprocess.run([systemd_analyze(), "verify", "--man=no", *map(str, units)],
                          capture_output=True, text=True, cwd=units[0].parent)


# ../shared beside the checkout: real data that may not be redistributed with the project.
SHARED = Path(__file__).resolve().parents[2] / "shared"


def shared_path(relative: str) -> Path:
    """``../shared/<relative>``, or skip the test saying what is missing and why."""
    import pytest

    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"{path} absent: real data lives in ../shared beside the checkout (present in CI and "
                    f"the project's machines, not in a clone elsewhere)")
    return path


# --------------------------------------------------------------------------- captioner tests


def captioner_tiles() -> list[np.ndarray]:
    """Nine RGB tiles of mixed sizes: six of noise, three colour ramps (captions differ between them)."""
    rng = np.random.default_rng(3)
    noisy = [rng.integers(0, 256, (70 + 5 * i, 90, 3), dtype=np.uint8) for i in range(6)]
    ramps = [np.broadcast_to(np.linspace(0, 255, 64, dtype=np.uint8)[:, None, None] * c, (64, 64, 3)).copy()
             for c in (np.array([1, 0, 0], np.uint8), np.array([0, 1, 1], np.uint8), np.array([1, 1, 1], np.uint8))]
    return noisy + ramps


class Counter:
    """Counts forward calls of a module through a real forward hook: the batch size of each call."""

    def __init__(self, module) -> None:
        self.calls: list[int] = []
        self._handle = module.register_forward_hook(lambda _m, args, kwargs, _out: self.calls.append(
            len(kwargs.get("pixel_values", args[0] if args else None))), with_kwargs=True)

    def __enter__(self) -> Counter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def pickle_only(model_dir: Path) -> None:
    (model_dir / "model.safetensors").rename(model_dir / "pytorch_model.bin")


def drop_tensors(model_dir: Path, prefix: str) -> None:
    """Re-save the weights without the tensors whose names start with ``prefix``."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(model_dir / "model.safetensors")
    kept = {name: tensor for name, tensor in tensors.items() if not name.startswith(prefix)}
    save_file(kept, model_dir / "model.safetensors", metadata={"format": "pt"})
