"""Atomic replacement on a real directory: all or nothing, nothing left behind, readable."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from insarwatch import files


def test_write_text_replaces_the_file_readable_by_others_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "manifest.jsonl"
    target.write_text("old\n", encoding="utf-8")
    files.write_text(target, "new\n")
    assert target.read_text(encoding="utf-8") == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == files.READABLE
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.jsonl"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_partial_one(tmp_path: Path) -> None:
    target = tmp_path / "index.jsonl"
    target.write_text("old\n", encoding="utf-8")
    with pytest.raises(RuntimeError), files.replacing(target) as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith(".")  # hidden from the watcher
        temporary.write_text("half", encoding="utf-8")
        raise RuntimeError("disk full")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["index.jsonl"]
