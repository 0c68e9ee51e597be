"""Cache entries move into place whole, and two jobs building the same entry at once both end with it."""

from __future__ import annotations

import pytest

from r3exp.cache_entries import staged_entry


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_an_entry_appears_whole_and_its_staging_directory_goes(tmp_path):
    target = tmp_path / "cache" / "entry"
    with staged_entry(target) as staging:
        assert staging.parent == target.parent and not target.exists()
        (staging / "config.json").write_text("{}")
    assert (target / "config.json").read_text() == "{}"
    assert leftovers(target.parent) == []


def test_a_failed_build_leaves_nothing(tmp_path):
    target = tmp_path / "entry"
    with pytest.raises(RuntimeError, match="build failed"):
        with staged_entry(target) as staging:
            (staging / "half.bin").write_bytes(b"x")
            raise RuntimeError("build failed")
    assert not target.exists() and leftovers(tmp_path) == []


def test_the_first_job_to_finish_wins_and_the_other_keeps_its_copy(tmp_path):
    """Two builds of one entry overlap: the one that finishes first moves in; the later one's rename meets the
    entry there ("Directory not empty"), and it drops its own copy instead of failing."""
    target = tmp_path / "entry"
    with staged_entry(target) as slower:
        (slower / "config.json").write_text("slower")
        with staged_entry(target) as faster:
            (faster / "config.json").write_text("faster")
        assert (target / "config.json").read_text() == "faster"
    assert (target / "config.json").read_text() == "faster"
    assert leftovers(tmp_path) == []


def test_a_file_in_the_way_is_an_error(tmp_path):
    target = tmp_path / "entry"
    target.write_text("not a directory")
    with pytest.raises(OSError):
        with staged_entry(target) as staging:
            (staging / "config.json").write_text("{}")
    assert leftovers(tmp_path) == []
