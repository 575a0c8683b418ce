"""Results on disk: one JSONL row per finished task, images beside them, an attempts log.

<output>/results.jsonl                 rows of an unsharded run
<output>/results.shard-I-of-N.jsonl    rows of shard I (one file per Slurm job: no two
                                       processes ever append to the same file)
<output>/images/<task id>.png          the best image of each task (the search report is
                                       embedded in the PNG by SaveImage too)
<output>/attempts*.jsonl               every dispatch and its outcome (lost, error, ok)

A row is appended (and fsync'ed) only after its image is in place, so whatever stops the
run, every row on disk describes a finished task with its image; a partly written last
line (the process killed mid-write) is ignored when reading. Every later run reads all
``results*.jsonl`` files of the folder and skips the tasks they hold.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class Busy(RuntimeError):
    """Another run is writing the same results file."""


def _suffix(shard) -> str:
    return "" if shard is None else f".shard-{shard[0]}-of-{shard[1]}"


def read_rows(output: Path) -> tuple[dict[str, dict], int]:
    """Every finished task's row by task id, and how many lines were skipped (torn or repeated)."""
    rows, skipped = {}, 0
    for path in sorted(Path(output).glob("results*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    task = row["task"]
                except (ValueError, KeyError, TypeError):
                    skipped += 1
                    continue
                if task in rows:
                    skipped += 1
                    continue
                rows[task] = row
    return rows, skipped


class Store:
    def __init__(self, output: Path, shard=None):
        self.output = Path(output)
        self.images = self.output / "images"
        self.images.mkdir(parents=True, exist_ok=True)
        self.rows_path = self.output / f"results{_suffix(shard)}.jsonl"
        self.attempts_path = self.output / f"attempts{_suffix(shard)}.jsonl"
        self.written: set[str] = set()
        self._lock = None
        lock_path = self.output / f".lock{_suffix(shard)}"
        if fcntl is not None:
            self._lock = open(lock_path, "w")  # noqa: SIM115 (held for the run)
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self._lock.close()
                self._lock = None
                raise Busy(f"another sweep is writing {self.rows_path} (lock {lock_path})") from None

    def close(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    @staticmethod
    def _append(path: Path, obj: dict) -> None:
        line = json.dumps(obj, separators=(",", ":")) + "\n"
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def save_image(self, task_id: str, png: bytes) -> str:
        path = self.images / f"{task_id}.png"
        tmp = path.with_suffix(".png.tmp")
        with open(tmp, "wb") as f:
            f.write(png)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return str(path.relative_to(self.output))

    def add_row(self, row: dict) -> None:
        self._append(self.rows_path, row)
        self.written.add(row["task"])

    def has_row(self, task_id: str) -> bool:
        return task_id in self.written

    def log_attempt(self, task_id: str, server: str, outcome: str, **extra) -> None:
        self._append(self.attempts_path, {"task": task_id, "server": server, "outcome": outcome,
                                          "time": round(time.time(), 3), **extra})


def read_attempts(output: Path) -> list[dict]:
    out = []
    for path in sorted(Path(output).glob("attempts*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out
