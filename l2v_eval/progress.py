"""The progress line of one evaluation task: texts encoded and reused, the encoding rate and an ETA."""
from __future__ import annotations

from tqdm.auto import tqdm

from l2v_core.distributed import world

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} texts [{elapsed}{postfix}]"


class TaskProgress:
    """Texts of one task: how many were encoded and reused, and a bar with the encoding rate
    and an ETA (remaining texts at the rate of the texts actually encoded, so reused texts
    do not inflate it)."""

    def __init__(self, desc: str = "", expected: int | None = None, enabled: bool = False):
        self.encoded = 0
        self.reused = 0
        self.encode_seconds = 0.0
        self._announced = 0
        self._expected = expected or 0
        self.bar = tqdm(total=expected or None, desc=desc, unit="text", bar_format=BAR_FORMAT, leave=False,
                        disable=not enabled or world()[0] != 0, dynamic_ncols=True)

    def announce(self, n: int) -> None:
        """A call with ``n`` texts arrived; grows the total past the estimate when needed."""
        self._announced += n
        if self._announced > (self.bar.total or 0):
            self.bar.total = self._announced
            self.bar.refresh()

    def reuse(self, n: int) -> None:
        if n:
            self.reused += n
            self.bar.update(n)
            self._postfix()

    def encode(self, n: int, seconds: float) -> None:
        self.encoded += n
        self.encode_seconds += seconds
        self.bar.update(n)
        self._postfix()

    def _postfix(self) -> None:
        parts = []
        if self.encoded and self.encode_seconds > 0:
            rate = self.encoded / self.encode_seconds
            left = max((self.bar.total or 0) - self.bar.n, 0)
            parts.append(f"{rate:,.0f} texts/s, ETA {tqdm.format_interval(left / rate)}")
        if self.reused:
            parts.append(f"{self.reused:,} reused")
        self.bar.set_postfix_str(", ".join(parts))

    def close(self) -> None:
        self.bar.close()
