"""Weight sync through a shared-memory file (rlcurr.rollout.shared_weights): layout, round trip,
rewrites seen by a reader that mapped the file once, stale files of dead processes removed, and
no file at all when the directory lacks room for it and the engines' copies (`os.statvfs` patched)."""

import os
from types import SimpleNamespace

import torch

from rlcurr.rollout import shared_weights as SW


def _named(seed):
    g = torch.Generator().manual_seed(seed)
    return [("a.weight", torch.randn(3, 5, generator=g)), ("b.bias", torch.randn(7, generator=g)),
            ("c.half", torch.randn(2, 3, generator=g).to(torch.bfloat16))]


def test_layout_offsets_are_aligned_and_disjoint():
    layout = SW.layout_for(_named(0), "/dev/shm/x")
    # a.weight: 15 fp32 = 60 bytes -> next at 64; b.bias: 28 bytes -> next at 128; c.half: 12 bytes
    assert [e[3] for e in layout.entries] == [0, 64, 128]
    assert layout.nbytes == 192 and layout.entries[2][1] == "bfloat16"


def test_round_trip_and_rewrite(tmp_path, monkeypatch):
    monkeypatch.setattr(SW, "SHM_DIR", tmp_path)
    writer, reader = SW.SharedWeightsWriter(), SW.SharedWeightsReader()
    try:
        layout = writer.write(_named(0))
        got = reader.read(layout)
        assert all(n == m and torch.equal(t, u) for (n, t), (m, u) in zip(got, _named(0)))
        assert writer.write(_named(1)) == layout  # same tensors: same file, rewritten in place
        got = reader.read(layout)  # the reader's mapping sees the new values
        assert all(torch.equal(t, u) for (_, t), (_, u) in zip(got, _named(1)))
    finally:
        writer.close()
    assert not any(tmp_path.iterdir())


def test_files_of_dead_processes_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(SW, "SHM_DIR", tmp_path)
    dead = tmp_path / f"{SW.PREFIX}999999999-abcd"  # no such pid
    dead.write_bytes(b"x")
    mine = tmp_path / f"{SW.PREFIX}1-abcd"  # pid 1 is alive
    mine.write_bytes(b"x")
    SW.new_path()
    assert not dead.exists() and mine.exists()


def _statvfs_with_free(free_bytes: int):
    real = os.statvfs

    def fake(path):
        st = real(path)
        return SimpleNamespace(f_bavail=free_bytes // st.f_frsize, f_frsize=st.f_frsize)

    return fake


def _big():
    return [("a.weight", torch.randn(256, 256)), ("b.bias", torch.randn(256))]


def test_shared_file_needs_room_for_itself_and_the_engine_copies(tmp_path, monkeypatch):
    monkeypatch.setattr(SW, "SHM_DIR", tmp_path)
    nbytes = SW.layout_for(_big(), "").nbytes
    writer = SW.SharedWeightsWriter()
    try:
        # room for the file and one copy, not for the file and two copies
        monkeypatch.setattr(os, "statvfs", _statvfs_with_free(2 * nbytes + SW.SHM_HEADROOM + 4096))
        assert writer.write(_big(), engine_copies=2) is None
        assert not any(tmp_path.iterdir())  # nothing was mapped: no SIGBUS possible
        assert writer.room.needed == 3 * nbytes and not writer.room.enough
        assert writer.write(_big(), engine_copies=1) is not None
        # a rewrite only needs room for the copies (the file's pages are there already)
        monkeypatch.setattr(os, "statvfs", _statvfs_with_free(nbytes + SW.SHM_HEADROOM + 4096))
        assert writer.write(_big(), engine_copies=1) is not None and writer.room.needed == nbytes
        assert writer.write(_big(), engine_copies=2) is None
        assert not any(tmp_path.iterdir())  # a fallback closes the file: its pages go back
    finally:
        writer.close()
    line = writer.room.shortage("the weights file")
    assert str(tmp_path) in line and f"needs {2 * nbytes} bytes" in line


def test_shm_directory_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(SW.SHM_DIR_ENV, str(tmp_path))
    assert SW.shm_dir() == tmp_path and SW.new_path().startswith(str(tmp_path))
    assert SW.room(10).directory == str(tmp_path)
    assert SW.room(10, tmp_path / "missing").free is None and not SW.room(10, tmp_path / "missing").enough
