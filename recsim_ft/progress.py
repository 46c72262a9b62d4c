"""Progress of every wait a user may sit through: a bar on a terminal or in a notebook, and where
nobody watches a bar (a log file, a captured stream, CI) a plain line every ``LINE_INTERVAL_S``
seconds once the wait has lasted that long, so a short step prints nothing and a long one is
never silent."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from tqdm.auto import tqdm
from tqdm.std import tqdm as plain_tqdm

#: Seconds between two lines of progress where no bar can be drawn.
LINE_INTERVAL_S = 10.0


def interactive(stream: IO[str] | None = None) -> bool:
    """Whether a person sees a bar drawn on ``stream`` (default: stderr): a terminal, or a
    notebook (where tqdm.auto draws a widget)."""
    stream = sys.stderr if stream is None else stream
    notebook = any(kind.__module__ == "tqdm.notebook" for kind in tqdm.__mro__)
    return notebook or bool(getattr(stream, "isatty", lambda: False)())


class _Lines:
    """A stream for tqdm that writes each redraw as a line (a log file has no carriage
    return), and nothing before ``after`` seconds have passed."""

    def __init__(self, stream: IO[str], after: float) -> None:
        self.stream, self.after, self.start = stream, after, time.monotonic()

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text and time.monotonic() - self.start >= self.after:
            self.stream.write(text + "\n")
            self.stream.flush()

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(shown: bool | None = None, **options: Any) -> Any:
    """A tqdm bar (``options`` as tqdm takes them): ``shown=True`` drawn, ``False`` never,
    ``None`` a bar where a person sees one (:func:`interactive`) and otherwise a line every
    :data:`LINE_INTERVAL_S` seconds from then on (to stderr)."""
    if shown is False:
        return tqdm(disable=True, **options)
    if shown or interactive():
        return tqdm(**options)
    lines = _Lines(sys.stderr, LINE_INTERVAL_S)
    return plain_tqdm(file=lines, mininterval=LINE_INTERVAL_S, ascii=True, **options)
