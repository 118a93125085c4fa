"""What every emulator keeps besides its account: its clock (which tests skew), a record of what
it received, a lock for its in-memory account, and its private streams' subscribers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy_devkit.emulator.recorder import Recorder
from proxy_devkit.emulator.streams import StreamHub


@dataclass(kw_only=True)
class EmulatorState:
    clock: Callable[[], float] = time.time
    #: the exchange's clock minus the real one (tests run the exchange minutes away)
    skew_ms: int = 0
    recorder: Recorder = field(default_factory=Recorder)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: the private stream's subscribers and what they sent
    streams: StreamHub = field(default_factory=StreamHub)

    def now_ms(self) -> int:
        return int(self.clock() * 1000) + self.skew_ms
