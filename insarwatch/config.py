"""Settings: one validated pydantic model read from TOML with ``INSARWATCH_*`` overrides.

The file is ``/etc/insarwatch/insarwatch.toml`` unless ``--config`` (or
``INSARWATCH_CONFIG``) names another; a missing default file means "all defaults", a
missing named file is an error. Environment variables override the file:
``INSARWATCH_VAR_DIR`` and ``INSARWATCH_DROP_DIR`` for the two paths every command
honours, and ``INSARWATCH_<SECTION>__<KEY>`` for anything else (``INSARWATCH_BATCH__TILES=8``);
any other ``INSARWATCH_*`` variable (``INSARWATCH_SMTP_PASSWORD``, named by ``password_env``)
is not a setting and is left alone. An unknown key or a value of the wrong type is a
one-line error naming the key; types are strict (``true`` is not the number 1, nor ``1``
a boolean), except that an integer is a good float. A key that
was renamed (``RENAMED``) still works under its old name, with one deprecation line in the
log per old key.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import InputError, one_line

DEFAULT_CONFIG = Path("/etc/insarwatch/insarwatch.toml")
ENV_PREFIX = "INSARWATCH_"
# The variables that are settings: the two paths, the file, and <SECTION>__<KEY>[__...].
ENV_PATHS = ("VAR_DIR", "DROP_DIR")
ENV_NESTED = "__"
TIME_OF_DAY = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
# Old dotted key → new dotted key. The old names differed by one word from keys that mean
# something else (batch.size vs captioning.batch_size, prepare_workers vs preprocess_workers).
RENAMED = {
    "batch.size": "batch.tiles",
    "batch.prepare_workers": "batch.reader_threads",
    "captioning.batch_size": "captioning.tiles_per_call",
    "captioning.preprocess_workers": "captioning.resize_threads",
}

log = logging.getLogger(__name__)
# What a model is shown (``imaging.model_input``): the PNG's RGB as the captioning paper did, or
# wrapped phase in phase.render's canonical rendering.
ModelInput = Literal["paper", "phase"]


def model_input_of(value: object, where: Path | str) -> ModelInput:
    """``value`` as a ``ModelInput``, or an ``InputError`` naming the file that holds it."""
    if value not in get_args(ModelInput):
        raise InputError(where, f"model_input {value!r} is none of {', '.join(get_args(ModelInput))}")
    return value  # type: ignore[return-value]


class Section(BaseModel):
    # strict: TOML and JSON give real booleans and numbers, so `tiles = true` is a mistake,
    # not 1; paths opt out (they arrive as strings).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ImagingSettings(Section):
    model_input: ModelInput = Field(
        "paper",
        description="What the model is shown: 'paper', the PNG's RGB (the captioning paper's path), or 'phase', "
                    "the wrapped phase (.geo.diff_pha.tif, else the PNG's colours inverted) in phase.render's "
                    "canonical rendering. A model version's train_config.json overrides it; prepare follows it",
    )
    rgba_policy: Literal["skip", "convert"] = Field(
        "skip", description="RGBA frames: 'skip' with a reason (the paper's choice) or 'convert' to RGB; "
                            "model_input 'phase' always reads them (transparency is no data)"
    )
    max_pixels: int = Field(
        89_478_485, gt=0, description="Largest image decoded; Pillow's decompression-bomb limit"
    )
    nodata_max_fraction: float = Field(
        0.5, ge=0, le=1,
        description="Skip a tile with a larger share of no-data pixels (swath corners, water, NaN phase); "
                    "a frame is refused for no-data only when no tile is left",
    )
    coherence_min: float = Field(
        0.25, ge=0, le=1, description="Refuse a frame, and skip a tile, whose mean coherence is lower"
    )
    artifact_max_score: float = Field(
        0.5, ge=0, le=1, description="Reject when the colour-bar/legend detector scores higher"
    )
    min_side: int = Field(
        56, ge=1,
        description="Reject frames narrower or shorter than this (px): a quarter of the 224-px Hephaestus patch the "
                    "model learnt from; below it the model would caption a few pixels magnified to fill its input",
    )
    tile_size: int = Field(224, gt=0, description="Tile side in pixels (the Hephaestus patch size)")
    tile_stride: int = Field(224, gt=0, description="Pixels between tile origins; at most tile_size")

    @model_validator(mode="after")
    def _tiles_cover_frame(self) -> ImagingSettings:
        if self.tile_stride > self.tile_size:
            raise ValueError(f"tile_stride {self.tile_stride} exceeds tile_size {self.tile_size}: tiles would leave gaps")
        return self


class TriageSettings(Section):
    enabled: bool = False
    min_similarity: float = Field(0.9, ge=-1, le=1)
    min_neighbours: int = Field(5, ge=1)


DECODING_DIR = Path(__file__).parent / "decoding"
DECODING_KEYS = ("num_beams", "do_sample", "temperature", "top_k", "top_p")


def decoding_preset(name: str) -> dict[str, Any]:
    """The decoding options of preset ``name`` (``insarwatch/decoding/<name>.json``)."""
    path = DECODING_DIR / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in DECODING_DIR.glob("*.json")))
        raise ValueError(f"unknown decoding preset {name!r}; known: {known}")
    data = json.loads(path.read_text(encoding="utf-8"))
    return {key: data[key] for key in DECODING_KEYS}


class CaptioningSettings(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    decoding: str = Field(
        "deterministic",
        description="Decoding preset (insarwatch/decoding/*.json): 'deterministic' or 'paper'; "
                    "num_beams, do_sample, temperature, top_k, top_p given here override it",
    )
    num_beams: int = Field(5, ge=1)
    max_new_tokens: int = Field(64, ge=1)
    min_new_tokens: int | None = Field(None, ge=0)
    do_sample: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    resize_threads: int = Field(
        2, ge=1, description="Threads resizing and normalising tiles for the next model calls while one runs"
    )
    tiles_per_call: int = Field(16, ge=1, description="Tiles per model call")
    cpu_threads: int | None = Field(
        None, ge=1, description="Torch threads for CPU inference; unset = torch's default (one per core)"
    )
    triage: TriageSettings = TriageSettings()

    @model_validator(mode="before")
    @classmethod
    def _apply_decoding_preset(cls, data: Any) -> Any:
        # The preset fills the decoding keys the file leaves out; a key given explicitly wins.
        if not isinstance(data, dict):
            return data
        return {**decoding_preset(data.get("decoding", "deterministic")), **data}

    @property
    def decoding_label(self) -> str:
        """The preset's name, plus every decoding option that differs from it (``paper, num_beams=1``)."""
        preset = decoding_preset(self.decoding)
        changed = [f"{key}={getattr(self, key)}" for key in DECODING_KEYS if getattr(self, key) != preset[key]]
        return ", ".join([self.decoding, *changed])


class CurationSettings(Section):
    deforming_min_confidence: float = Field(
        0.8, ge=0, le=1,
        description="`insarwatch prepare` drops deforming annotations whose confidence is lower (or not a "
                    "number). 0.8 reproduces the captioning paper's 634 deforming annotations on the real "
                    "Hephaestus set, a rule its text never states (README); 0 keeps every annotation",
    )


class RetrievalSettings(Section):
    k: int = Field(5, ge=1)
    index_type: Literal["auto", "flat", "hnsw", "ivf"] = "auto"
    exact_max_vectors: int = Field(
        20_000, ge=1, description="'auto' builds an exact index up to this size (benchmarks/README.md)"
    )
    approximate_type: Literal["hnsw", "ivf"] = Field(
        "ivf", description="Index 'auto' builds above exact_max_vectors"
    )
    hnsw_m: int = Field(32, ge=2, description="HNSW graph degree")
    hnsw_ef_construction: int = Field(128, ge=1, description="HNSW build-time search depth")
    hnsw_ef_search: int = Field(128, ge=1, description="HNSW query-time search depth (recall vs latency)")
    ivf_nlist: int | None = Field(None, ge=1, description="IVF lists; default sqrt(n), at most n/39")
    ivf_nprobe: int = Field(16, ge=1, description="IVF lists visited per query (recall vs latency)")
    use_gpu: bool = Field(True, description="Search on the GPU when FAISS sees one")
    feature: Literal["pooled", "patch_mean"] = Field(
        "pooled", description="Vision output indexed: the pooled output (the paper's) or the mean of the "
                                  "patch tokens (benchmarks/README.md)")
    embedding: Literal["pooled", "centred", "whitened"] = Field(
        "whitened", description="Index vectors: the raw feature, centred on the indexed examples' mean, or "
                                "centred and whitened (benchmarks/README.md)")
    whiten_components: int | None = Field(
        None, ge=1, description="With 'whitened': keep this many principal axes (default all with variance)")


class AlertSettings(Section):
    alert_vote: float = Field(0.5, ge=0, le=1, description="Neighbour deformation vote needed to confirm")
    review_vote: float = Field(
        0.5, ge=0, le=1, description="Neighbour vote that flags a caption reporting no deformation, or none at all"
    )
    min_similarity: float = Field(
        0.0, ge=-1, le=1, description="Neighbours less similar than this to the tile do not vote"
    )
    min_cluster_tiles: int = Field(
        2, ge=1, description="Adjacent alert tiles that make their interferogram an alert"
    )
    frame_false_alarm_rate: float = Field(
        0.05, gt=0, lt=1, description="Share of quiet interferograms allowed to alert on one isolated tile, "
                                      "through the model's validation calibration"
    )
    isolated_tile_vote: float = Field(
        1.0, ge=0, le=1, description="Vote an isolated alert tile needs to alert its interferogram alone, "
                                     "for a model without a calibration"
    )


class SmtpSettings(Section):
    host: str = "localhost"
    port: int = 25
    security: Literal["none", "starttls", "tls"] = "starttls"
    username: str | None = None
    password_file: Path | None = Field(None, strict=False)
    password_env: str | None = None
    ca_file: Path | None = Field(
        None, strict=False, description="PEM bundle to verify the server's certificate against (a private CA); system store if unset"
    )
    sender: str = "insarwatch@localhost"
    recipients: list[str] = []
    recipients_by_frame: dict[str, list[str]] = {}
    recipients_by_volcano: dict[str, list[str]] = {}
    timeout_seconds: float = Field(30, gt=0)


class WebhookSettings(Section):
    url: str
    timeout_seconds: float = Field(10, gt=0)


class NotifySettings(Section):
    smtp: SmtpSettings | None = None
    webhook: WebhookSettings | None = None
    retry_base_seconds: float = Field(30, gt=0)
    retry_max_seconds: float = Field(3600, gt=0)
    give_up_after_hours: float = Field(72, gt=0)
    report_base_url: str | None = Field(None, description="Where reports/ is served, for links in messages")


class WatchSettings(Section):
    observer: Literal["auto", "inotify", "polling"] = "auto"
    settle_seconds: float = Field(5, ge=0)
    rescan_interval_seconds: float = Field(600, gt=0)
    max_attempts: int = Field(3, ge=1)
    shutdown_timeout_seconds: float = Field(60, gt=0)
    queue_max: int = Field(256, ge=1, description="Interferograms decoded ahead of the model, at most")
    pixels_in_flight: int = Field(
        200_000_000, ge=1,
        description="Decoded pixels held ahead of the model, at most (read from each PNG header before "
                    "decoding; one interferogram is always let through)")
    model_check_seconds: float = Field(300, gt=0)
    storage_retry_seconds: float = Field(
        5, gt=0, description="While the state database cannot be written (a full disk), how often to try again")


class BatchSettings(Section):
    tiles: int = Field(16, ge=1, description="Tiles, from any interferograms, that make a batch")
    max_wait_seconds: float = Field(2, ge=0)
    reader_threads: int | None = Field(
        None, ge=0,
        description="Threads that read and check interferograms while the model runs; 0 reads them in "
                    "the processing loop between batches. Default: 0 when the model runs on the CPU, 2 on a GPU",
    )


class DigestSettings(Section):
    enabled: bool = True
    time: str = Field("07:00", description="Local time of the daily digest, HH:MM (00:00 to 23:59)")

    @field_validator("time")
    @classmethod
    def _time_of_day(cls, value: str) -> str:
        if not TIME_OF_DAY.fullmatch(value):
            raise ValueError(f"{value!r} is not a time of day HH:MM from 00:00 to 23:59")
        return value

    @property
    def hour_minute(self) -> tuple[int, int]:
        hour, minute = self.time.split(":")
        return int(hour), int(minute)


class Volcano(Section):
    """A ``[[volcanoes]]`` entry: frames route alerts by frame; a position and radius move,
    re-radius or add a volcano in the GVP catalogue (``insarwatch/volcanoes.py``)."""

    name: str
    frames: list[str] = []
    latitude: float | None = Field(None, ge=-90, le=90, description="WGS84 degrees north")
    longitude: float | None = Field(None, ge=-180, le=180, description="WGS84 degrees east")
    radius_km: float | None = Field(None, gt=0, description="How far from it a tile is near it")

    @model_validator(mode="after")
    def _position_whole(self) -> Volcano:
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError(f"volcano {self.name!r} needs both latitude and longitude, or neither")
        return self


class Settings(Section):
    var_dir: Path = Field(Path("/var/lib/insarwatch"), strict=False)
    drop_dir: Path = Field(Path("/srv/licsar"), strict=False)
    imaging: ImagingSettings = ImagingSettings()
    captioning: CaptioningSettings = CaptioningSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    alerts: AlertSettings = AlertSettings()
    notify: NotifySettings = NotifySettings()
    watch: WatchSettings = WatchSettings()
    batch: BatchSettings = BatchSettings()
    digest: DigestSettings = DigestSettings()
    curation: CurationSettings = CurationSettings()
    volcanoes: list[Volcano] = []

    @field_validator("var_dir", "drop_dir", mode="before")
    @classmethod
    def _not_empty(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty (it would mean the current directory); give a directory")
        return value

    @property
    def models_dir(self) -> Path:
        return self.var_dir / "models"

    @property
    def state_db(self) -> Path:
        return self.var_dir / "state.db"

    @property
    def reports_dir(self) -> Path:
        return self.var_dir / "reports"

    def volcano_for(self, frame_id: str) -> str | None:
        for volcano in self.volcanoes:
            if frame_id in volcano.frames:
                return volcano.name
        return None


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """``INSARWATCH_A__B=v`` → ``{"a": {"b": v}}``; values are JSON when they parse as JSON.
    Variables of neither form (``INSARWATCH_SMTP_PASSWORD``) are not settings: skipped."""
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX):]
        if key not in ENV_PATHS and ENV_NESTED not in key:
            continue
        path = key.lower().split(ENV_NESTED)
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                break
        if not isinstance(node, dict) or isinstance(node.get(path[-1]), dict):
            # INSARWATCH_BATCH__TILES and INSARWATCH_BATCH__TILES__X: which one wins would
            # depend on the environment's order.
            raise InputError("environment", f"{name} sets part of a key another INSARWATCH_ variable sets whole")
        node[path[-1]] = value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _renamed(data: dict[str, Any], source: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``data`` with every old key of ``RENAMED`` moved to its new name, and the (old, new)
    pairs found; giving both names of one key is an error."""
    data = {name: dict(value) if isinstance(value, dict) else value for name, value in data.items()}
    found = []
    for old, new in RENAMED.items():
        section, old_key = old.split(".")
        table = data.get(section)
        if not isinstance(table, dict) or old_key not in table:
            continue
        new_key = new.split(".")[1]
        if new_key in table:
            raise InputError(source, f"key '{old}' is the old name of '{new}': give only '{new}'")
        table[new_key] = table.pop(old_key)
        found.append((old, new))
    return data, found


def load_settings(path: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read settings from ``path`` (or the default file) and the environment."""
    environ = dict(os.environ if environ is None else environ)
    explicit = path is not None or ENV_PREFIX + "CONFIG" in environ
    config_path = Path(path or environ.get(ENV_PREFIX + "CONFIG") or DEFAULT_CONFIG)
    data: dict[str, Any] = {}
    if config_path.exists():
        try:
            data = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputError(config_path, f"not valid TOML: {exc}") from None
        except OSError as exc:
            raise InputError(config_path, f"cannot be read: {exc.strerror}") from None
    elif explicit:
        raise InputError(config_path, "configuration file does not exist")
    data = _merge(data, _env_overrides(environ))
    source = str(config_path) if config_path.exists() else "environment"
    data, renamed = _renamed(data, source)
    for old, new in renamed:
        log.warning("%s: setting '%s' is deprecated, use '%s'", source, old, new)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise InputError(source, one_line(exc, "key", extra="unknown key")) from None
