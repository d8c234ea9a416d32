"""Reading ahead: :func:`prefetch` iterates in a background thread (frames decode while the
network runs)."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class _Raised:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException):
        self.exc = exc


_END = object()


def prefetch(iterable: Iterable[T], depth: int = 4) -> Iterator[T]:
    """Iterate ``iterable`` in a background thread, ``depth`` items ahead of the consumer.

    Used to decode frames while the network runs. An exception raised by the producer is
    re-raised in the consumer (same object, original traceback) at the point where the item
    would have come. When the consumer stops early (``break``, an exception, ``close()``), the
    thread stops producing, the source iterator is closed in the thread, and the thread is joined
    before this generator finishes.

    Args:
        iterable: any iterable (it is iterated only in the background thread).
        depth: how many items may wait in the queue (>= 1).
    Yields:
        the items of ``iterable``, in order.
    """
    if depth < 1:
        raise ValueError("depth must be >= 1")
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        it = iter(iterable)
        try:
            for item in it:
                if not put(item):
                    break
            else:
                put(_END)
        except BaseException as e:  # handed to the consumer
            put(_Raised(e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    thread = threading.Thread(target=produce, name="tcmn-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            with contextlib.suppress(queue.Empty):
                q.get_nowait()
            thread.join(timeout=0.05)


class FrameReader:
    """``frame_source`` for :func:`~tcmn.inference.propagator.propagate` over a
    :class:`~tcmn.io.video.VideoSource`.

    ``reader(indices)`` yields the frames (uint8 RGB ``[H, W, 3]``) of ``indices`` (consecutive,
    increasing or decreasing), decoded ahead in a :func:`prefetch` thread.
    The frame handed out last stays available as :meth:`frame` for the overlay, so the source
    is never read from two threads at once (a video capture is not thread-safe). Only one
    read-ahead thread runs at a time: a new call, or :meth:`close`, stops the previous one.
    """

    def __init__(self, source):
        self.source = source
        self._last: tuple[int, object] | None = None
        self._it = None

    def __call__(self, indices: Iterable[int]) -> Iterator:
        self.close()
        idx = list(indices)
        if not idx:
            return iter(())
        n = len(self.source)
        step = 1 if len(idx) < 2 or idx[1] > idx[0] else -1
        stop = idx[-1] + step
        frames = self.source.iter(idx[0], stop if 0 <= stop < n else None, step)
        self._it = prefetch(frames)
        return self._gen(self._it)

    def _gen(self, it) -> Iterator:
        for i, frame in it:
            self._last = (i, frame)
            yield frame

    def frame(self, index: int):
        """The frame ``index``, which must be the one handed out last (uint8 ``[H, W, 3]``)."""
        if self._last is None or self._last[0] != index:
            raise RuntimeError(f"frame {index} is not the frame read last")
        return self._last[1]

    def close(self) -> None:
        """Stop the read-ahead thread of the previous call (no-op when none runs)."""
        if self._it is not None:
            self._it.close()
            self._it = None
