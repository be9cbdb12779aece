"""One background thread that calls ``sample()`` every ``interval_s`` (the first call at once) until ``stop()``."""
from __future__ import annotations

import threading


class PeriodicSampler:
    """Subclasses implement ``sample()``; its results collect in ``samples`` in order."""

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self.samples: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self):
        raise NotImplementedError

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.sample())
            self._stop.wait(self.interval_s)
