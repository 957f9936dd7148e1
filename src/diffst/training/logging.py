"""Run logs written by rank 0: ``log.csv``, TensorBoard events and a rich progress bar.

Every row of ``log.csv`` has the columns of :data:`CSV_COLUMNS` (empty where a value was not
measured at that step, e.g. validation metrics between validations). On resume the rows after
the resumed step are dropped, so the file always describes one consistent history.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from types import TracebackType
from typing import Any

from diffst.config import atomic_write_text

__all__ = ["CSV_COLUMNS", "RunLogger"]

CSV_COLUMNS = (
    "step",
    "epoch",
    "loss",
    "loss_simple",
    "loss_vb",
    "loss_disentangle",
    "lr",
    "grad_norm",
    "patches_per_s",
    "ema_decay",
    "val_pcc",
    "val_pcc_posterior",
    "val_pcc_bicubic",
    "val_pcc_nearest",
    "val_patches",
    "loss_mean",
)


class RunLogger:
    """CSV + TensorBoard + progress bar; every method is a no-op when ``enabled`` is false.

    Parameters
    ----------
    out_dir
        Run folder; ``log.csv`` and ``tensorboard/`` go there.
    enabled
        True on rank 0 only.
    progress
        Show a rich progress bar.
    total_steps, start_step
        Progress-bar extent (resumed runs start part-way).
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        enabled: bool,
        progress: bool,
        total_steps: int,
        start_step: int = 0,
    ) -> None:
        self.enabled = enabled
        self.csv_path = out_dir / "log.csv"
        self._tb: Any = None
        self._progress: Any = None
        self._task: Any = None
        if not enabled:
            return
        self._truncate_csv(start_step)
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(log_dir=str(out_dir / "tensorboard"), purge_step=start_step + 1)
        if progress:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "train", total=total_steps, completed=start_step, info=""
            )

    def _truncate_csv(self, start_step: int) -> None:
        if not self.csv_path.is_file():
            atomic_write_text(self.csv_path, ",".join(CSV_COLUMNS) + "\n")
            return
        with open(self.csv_path, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("step") and int(r["step"]) <= start_step]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.csv_path, buf.getvalue())

    def log(self, step: int, values: dict[str, float]) -> None:
        """Append one CSV row and the matching TensorBoard scalars for ``step``."""
        if not self.enabled:
            return
        row = {k: _fmt(values.get(k)) for k in CSV_COLUMNS if k != "step"}
        with open(self.csv_path, "a", newline="", encoding="utf-8") as fh:
            csv.DictWriter(fh, fieldnames=CSV_COLUMNS).writerow({"step": step, **row})
        for key, value in values.items():
            if value is not None and key != "epoch":
                self._tb.add_scalar(_tb_name(key), float(value), step)
        self._tb.flush()

    def advance(self, step: int, info: str = "") -> None:
        """Move the progress bar to ``step`` and show ``info`` beside it."""
        if self._progress is not None:
            self._progress.update(self._task, completed=step, info=info)

    def message(self, text: str) -> None:
        """Print a line above the progress bar (or plainly when there is none)."""
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        """Stop the progress bar and close TensorBoard."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return "nan" if math.isnan(value) else f"{value:.6g}"


def _tb_name(key: str) -> str:
    if key.startswith("val_"):
        return f"val/{key[4:]}"
    if key.startswith("loss"):
        return f"loss/{key}"
    return f"train/{key}"
