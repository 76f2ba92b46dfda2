"""The media directory: safe paths, atomic snapshot writes, the index across restarts, retention."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from master.media.store import MediaDir

NOW = 1_700_000_000.0  # Unix seconds; files get mtimes relative to it


def put(media: MediaDir, camera: str, event_id: str, size: int, mtime: float, kind: str = "clip") -> Path:
    """A file written the way the encoder does (then add()ed), with mtime set."""
    path = media.clip_path(camera, event_id) if kind == "clip" else media.snapshot_path(camera, event_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"m" * size)
    os.utime(path, (mtime, mtime))
    media.add(path)
    return path


def test_paths_are_laid_out_by_kind_camera_and_event(tmp_path):
    media = MediaDir(tmp_path)
    assert media.clip_path("5001", "ev-a1b2c3-1f") == tmp_path / "clips" / "5001" / "ev-a1b2c3-1f.mp4"
    assert media.snapshot_path("front_door", "ev.2") == tmp_path / "snapshots" / "front_door" / "ev.2.jpg"


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "/abs", ".hidden", "-rf", "a\\b", "a\x00b",
                                  "é", "a b", "x" * 129, "ok\n"])
def test_unsafe_names_are_rejected_for_camera_and_event(tmp_path, name):
    media = MediaDir(tmp_path)
    for call in (lambda: media.clip_path(name, "ev"), lambda: media.clip_path("cam", name),
                 lambda: media.snapshot_path(name, "ev"), lambda: media.snapshot_path("cam", name),
                 lambda: media.write_snapshot(name, "ev", b"x")):
        with pytest.raises(ValueError):
            call()
    assert not any(tmp_path.rglob("*"))


def test_a_snapshot_is_written_whole_and_found_by_its_event(tmp_path):
    media = MediaDir(tmp_path)
    path = media.write_snapshot("cam", "ev1", b"\xff\xd8jpeg bytes")
    assert path == media.snapshot_path("cam", "ev1") == media.find_snapshot("ev1")
    assert path.read_bytes() == b"\xff\xd8jpeg bytes"
    assert [p.name for p in path.parent.iterdir()] == ["ev1.jpg"]  # no .part left
    assert media.total_bytes == 12 and media.find("ev1") is None  # a snapshot is not a clip


def test_a_snapshot_the_disk_refuses_returns_none_and_is_counted(tmp_path):
    media = MediaDir(tmp_path)
    (tmp_path / "snapshots").mkdir()
    (tmp_path / "snapshots" / "cam").write_bytes(b"a file where the camera's directory should be")
    assert media.write_snapshot("cam", "ev1", b"jpeg") is None
    assert media.counters["snapshot_write_failed"] == 1 and media.find_snapshot("ev1") is None


def test_a_snapshot_on_a_full_disk_leaves_no_partial_file(tmp_path):
    media = MediaDir(tmp_path)
    path = media.snapshot_path("cam", "ev1")
    path.parent.mkdir(parents=True)
    os.symlink("/dev/full", str(path) + ".part")  # writes fail with ENOSPC, as on a full disk
    assert media.write_snapshot("cam", "ev1", b"jpeg" * 5000) is None
    assert not os.path.lexists(str(path) + ".part") and not path.exists()
    assert media.write_snapshot("cam", "ev1", b"jpeg") == path  # and the next write works


def test_the_index_is_rebuilt_from_disk_so_clips_survive_a_restart(tmp_path):
    media = MediaDir(tmp_path)
    clip = put(media, "cam", "ev1", 100, NOW - 10)
    snap = put(media, "cam2", "ev2", 50, NOW - 5, kind="snapshot")
    (clip.parent / "notes.txt").write_text("not ours")  # ignored
    again = MediaDir(tmp_path)
    assert again.find("ev1") == clip and again.find_snapshot("ev2") == snap
    assert again.find("ev2") is None and again.total_bytes == 150
    assert again.stats()["clips"] == 1 and again.stats()["snapshots"] == 1


def test_part_files_left_by_a_crash_are_removed_at_start_only(tmp_path):
    media = MediaDir(tmp_path)
    clip = put(media, "cam", "ev1", 100, NOW)
    stale = clip.with_name("ev0.mp4.part")
    stale.write_bytes(b"half a clip")
    restarted = MediaDir(tmp_path, rescan_s=1.0)
    assert not stale.exists() and clip.exists()
    assert restarted.counters["parts_removed"] == 1
    writing = clip.with_name("ev2.mp4.part")  # the encoder at work, after start-up
    writing.write_bytes(b"being written")
    restarted.sweep(NOW + 10)  # rescans: the index is rebuilt, the .part left alone
    assert writing.exists() and restarted.total_bytes == 100


def test_sweep_deletes_files_older_than_max_age(tmp_path):
    media = MediaDir(tmp_path, max_age_s=3600)
    old = put(media, "cam", "old", 10, NOW - 7200)
    old_snap = put(media, "cam", "old", 10, NOW - 3601, kind="snapshot")
    young = put(media, "cam", "young", 10, NOW - 60)
    assert sorted(media.sweep(NOW)) == sorted([old, old_snap])
    assert not old.exists() and not old_snap.exists() and young.exists()
    assert media.find("old") is None and media.find("young") == young and media.total_bytes == 10
    assert media.sweep(NOW) == []


def test_sweep_deletes_oldest_first_until_under_max_bytes(tmp_path):
    media = MediaDir(tmp_path, max_bytes=250)
    paths = [put(media, "cam", f"ev{i}", 100, NOW - 100 + i) for i in range(5)]
    assert media.total_bytes == 500
    assert media.sweep(NOW) == paths[:3]
    assert [p.exists() for p in paths] == [False, False, False, True, True]
    assert media.total_bytes == 200
    put(media, "cam", "ev5", 100, NOW + 1)  # the running total follows writes
    assert media.total_bytes == 300
    assert media.sweep(NOW + 1) == [paths[3]] and media.total_bytes == 200


def test_sweep_orders_by_mtime_after_a_restart(tmp_path):
    media = MediaDir(tmp_path)
    newer = put(media, "a", "newer", 100, NOW - 10)
    older = put(media, "b", "older", 100, NOW - 20)  # written later, but older on disk
    restarted = MediaDir(tmp_path, max_bytes=150)
    assert restarted.sweep(NOW) == [older] and newer.exists()


def test_a_rescan_notices_files_deleted_behind_our_back(tmp_path):
    media = MediaDir(tmp_path, rescan_s=60)
    gone = put(media, "cam", "gone", 100, NOW - 10)
    media.sweep(NOW)  # first sweep scans
    gone.unlink()
    assert media.total_bytes == 100 and media.find("gone") == gone
    media.sweep(NOW + 30)  # before rescan_s: still believed there
    assert media.total_bytes == 100
    media.sweep(NOW + 61)
    assert media.total_bytes == 0 and media.find("gone") is None


def test_rewriting_a_file_counts_it_once(tmp_path):
    media = MediaDir(tmp_path)
    put(media, "cam", "ev1", 100, NOW)
    put(media, "cam", "ev1", 40, NOW + 1)
    assert media.total_bytes == 40 and media.stats()["files"] == 1


def test_a_missing_or_unreadable_root_is_an_empty_directory(tmp_path):
    (tmp_path / "not-a-dir").write_bytes(b"x")
    media = MediaDir(tmp_path / "not-a-dir")
    assert media.total_bytes == 0 and media.sweep(NOW) == []
    assert media.write_snapshot("cam", "ev", b"jpeg") is None
    assert MediaDir(tmp_path / "missing").stats()["files"] == 0


def test_config_is_checked():
    with pytest.raises(ValueError):
        MediaDir("/nonexistent", max_bytes=-1)
    with pytest.raises(ValueError):
        MediaDir("/nonexistent", max_age_s=0)
