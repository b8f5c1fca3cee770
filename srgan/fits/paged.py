"""Memory-mapped arrays that hand their pages back, so streaming a large FITS keeps RSS small.

Its own module because both the pixel pipeline (reading inputs, writing outputs in strips) and
the streaming writer (creating the mappings) use it.
"""

from __future__ import annotations

import mmap

import numpy as np


class PagedArray:
    """An array in a memory-mapped file that hands its pages back as it goes.

    Pages of a mapped file that a process has touched count in its resident memory (RSS)
    until they are unmapped, so writing a 6 GB output through one memmap shows as 6 GB of
    RSS. Every ``chunk`` bytes read or written through this wrapper, the mapping is flushed
    to the file and its pages released (``madvise(MADV_DONTNEED)``, safe for a shared file
    mapping after ``msync``): RSS stays near ``chunk``. Indexing returns plain numpy views
    (valid after a release: their pages are read back from the file); :meth:`view` gives a
    wrapper of a reshaped or indexed part that shares the counter.
    """

    def __init__(self, array: np.ndarray, mm, chunk: int = 1 << 26, _count=None):
        self.array, self.mm, self.chunk = array, mm, chunk
        self._count = _count if _count is not None else [0]

    shape = property(lambda self: self.array.shape)
    ndim = property(lambda self: self.array.ndim)
    dtype = property(lambda self: self.array.dtype)
    size = property(lambda self: self.array.size)

    def __array__(self, dtype=None, copy=None):  # whole-array numpy maths (no paging)
        return np.asarray(self.array, dtype=dtype)

    def view(self, fn) -> "PagedArray":
        return PagedArray(fn(self.array), self.mm, self.chunk, self._count)

    def __getitem__(self, key):
        part = self.array[key]
        self._touch(part.nbytes)
        return part

    def __setitem__(self, key, value):
        self.array[key] = value
        self._touch(np.asarray(value).nbytes)

    def _touch(self, nbytes: int) -> None:
        self._count[0] += nbytes
        if self._count[0] >= self.chunk:
            self.release()

    def release(self) -> None:
        self._count[0] = 0
        if self.array.flags.writeable:
            self.mm.flush()
        if hasattr(self.mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            self.mm.madvise(mmap.MADV_DONTNEED)


def sub(out, fn):
    """``fn(out)`` for arrays, a sharing view for :class:`PagedArray` (e.g. one plane of a cube)."""
    return out.view(fn) if isinstance(out, PagedArray) else fn(out)
