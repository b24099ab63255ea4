"""On-disk cache of arrays derived from source files (prepared captures: decoded and resized).

An entry is keyed by each source file's resolved path, size and mtime (ns) and by the parameters
that made it (target size, depth unit, format version): touching or replacing a source file, or
asking for another size, misses. Entries are safetensors files written to a temporary name and
renamed, so a killed run never leaves a half-written entry; an entry that cannot be read is
ignored and rebuilt. Where: $DEPTH_LORA_CACHE, else $XDG_CACHE_HOME/depth_lora/prepared (default
~/.cache/depth_lora/prepared), never inside the data folder (it may be read-only). Delete the
folder to free the space (about 3 MB per capture at 518 x 840).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from depth_lora import __version__

CACHE_ENV = "DEPTH_LORA_CACHE"
# Bump when what an entry holds changes for the same sources and parameters (e.g. the resizing).
FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """$DEPTH_LORA_CACHE, else $XDG_CACHE_HOME/depth_lora/prepared, else ~/.cache/depth_lora/prepared."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "depth_lora" / "prepared"


def entry_key(sources: list[Path], params: dict) -> str | None:
    """The entry name for these source files (path, size, mtime, inode, ctime), this version of
    depth-lora and the parameters; None if a source cannot be read (its loader then says why).
    Take it *before* reading the sources: a file changed while it was read then misses next time
    instead of hitting stale arrays."""
    try:
        stamps = []
        for path in sources:
            stat = Path(path).stat()
            # inode and ctime too: a file replaced by `cp -p` or `rsync -a` keeps size and mtime.
            stamps.append([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino,
                           stat.st_ctime_ns])
    except OSError:
        return None
    text = json.dumps({"version": FORMAT_VERSION, "depth_lora": __version__, "sources": stamps,
                       "params": params}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


class ArrayCache:
    """Named numpy arrays per entry key (see `entry_key`), one safetensors file each, in one folder.

    `get` returns None on a miss or an unreadable entry; `put` writes atomically and, if the
    folder cannot be written, says so once and stops trying (the run goes on without a cache).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.writable = True

    def path(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    def get(self, key: str | None) -> dict[str, np.ndarray] | None:
        from safetensors.numpy import load_file

        if key is None or not self.path(key).is_file():
            return None
        try:
            return load_file(self.path(key))
        except Exception:  # a damaged entry (truncated, not safetensors): the caller rebuilds it
            return None

    def put(self, key: str | None, arrays: dict[str, np.ndarray]) -> None:
        from safetensors import SafetensorError
        from safetensors.numpy import save_file

        if key is None or not self.writable:
            return
        tmp = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=key[:12], suffix=".tmp", dir=self.root)
            os.close(fd)
            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, tmp)
            os.replace(tmp, self.path(key))  # atomic: readers see no entry or the whole new one
        except (OSError, SafetensorError) as exc:  # a read-only folder, a full disk
            self.writable = False
            reason = getattr(exc, "strerror", None) or exc
            print(f"WARNING: cannot write the prepared-capture cache in {self.root} ({reason}); going on "
                  f"without it (set {CACHE_ENV} to a writable folder, or --no-cache)", flush=True)
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
