"""Streaming table access (CSV / csv.gz with pandas chunks, parquet by row groups) with
errors that name the file: missing columns, empty files, truncated gzip, unreadable parquet,
and — for the columns a reader declares numeric, integer or text — the first empty,
non-numeric, non-finite or non-integer value, with its field and line (CSV) or row (parquet)."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from diffst.io.checks import require_columns, require_file
from diffst.io.sample import InputError

__all__ = [
    "Fields",
    "check_fields",
    "csv_columns",
    "iter_csv",
    "iter_parquet",
    "parquet_columns",
    "read_csv_checked",
]

_READ_ERRORS = (
    EOFError,
    OSError,
    gzip.BadGzipFile,
    zlib.error,
    UnicodeDecodeError,
    pd.errors.ParserError,
    pd.errors.EmptyDataError,
)


@dataclass(frozen=True)
class Fields:
    """What a reader requires of the values of its columns (checked chunk by chunk).

    ``numeric`` columns must hold finite numbers, ``integer`` columns whole numbers (also
    checked as numeric), ``text`` columns non-empty strings.
    """

    numeric: tuple[str, ...] = ()
    integer: tuple[str, ...] = ()
    text: tuple[str, ...] = ()


def _is_blank(value: object) -> bool:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return not isinstance(value, str) or not value.strip()


def _truncation_hint(path: Path, position: int, n_rows: int) -> str:
    """A hint when the bad row is the last one read and the (plain-text) file ends mid-line."""
    if position != n_rows - 1 or path.suffix in (".gz", ".parquet"):
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(-1, 2)
            ends_mid_line = fh.read(1) not in (b"\n", b"\r")
    except OSError:
        return ""
    if not ends_mid_line:
        return ""
    return "; the file ends mid-line, so it looks truncated (copy it again)"


def check_fields(
    frame: pd.DataFrame, path: Path, fields: Fields, *, first: int, unit: str = "line"
) -> pd.DataFrame:
    """Check ``frame``'s values against ``fields``; numeric columns come back as float64,
    integer columns as int64.

    Parameters
    ----------
    frame
        Rows of ``path`` (a chunk or the whole table).
    path
        File the rows come from (named in the message).
    fields
        Required value types per column.
    first
        Line (CSV, header = line 1) or row number of ``frame``'s first row.
    unit
        ``"line"`` or ``"row"``, as the message names a position.

    Raises
    ------
    InputError
        ``<file>: line <n>: field <column> …`` for the first empty, non-numeric, non-finite or
        non-integer value, or empty text.
    """
    out = frame.copy() if fields.numeric or fields.integer else frame
    for col in dict.fromkeys((*fields.numeric, *fields.integer)):
        raw = frame[col]
        number = np.asarray(pd.to_numeric(raw, errors="coerce"), dtype=np.float64)
        bad = ~np.isfinite(number)
        if col in fields.integer:
            bad |= np.isfinite(number) & (number != np.round(number))
        if bad.any():
            k = int(np.argmax(bad))
            value = raw.iloc[k]
            if pd.isna(value):
                problem = "is empty or NaN" + _truncation_hint(path, k, len(frame))
            elif not np.isfinite(number[k]):
                problem = f"= {str(value)!r} is not a finite number"
            else:
                problem = f"= {str(value)!r} is not an integer"
            raise InputError(f"{path}: {unit} {first + k}: field {col} {problem}")
        out[col] = number.astype(np.int64) if col in fields.integer else number
    for col in fields.text:
        raw = frame[col]
        names = raw.cat.categories if isinstance(raw.dtype, pd.CategoricalDtype) else pd.unique(raw)
        blank = [v for v in names if _is_blank(v)]
        bad = raw.isna().to_numpy()
        if blank:
            bad = bad | raw.isin(blank).to_numpy()
        if bad.any():
            k = int(np.argmax(bad))
            hint = _truncation_hint(path, k, len(frame))
            raise InputError(f"{path}: {unit} {first + k}: field {col} is empty{hint}")
    return out


def read_csv_checked(
    path: Path, columns: Sequence[str], fields: Fields, *, what: str, sep: str = ","
) -> pd.DataFrame:
    """A whole (small) CSV table with ``columns``, checked against ``fields``."""
    require_columns(csv_columns(path, what, sep), columns, path)
    try:
        frame = pd.read_csv(path, usecols=list(columns), sep=sep)
    except _READ_ERRORS as err:
        raise InputError(f"{path}: the {what} is truncated or corrupt: {err}") from err
    if frame.empty:
        raise InputError(f"{path}: the {what} has a header but no rows")
    return check_fields(frame, path, fields, first=2)


def csv_columns(path: Path, what: str, sep: str = ",") -> list[str]:
    """Header of a CSV / csv.gz file."""
    require_file(path, what)
    try:
        return [str(c) for c in pd.read_csv(path, nrows=0, sep=sep).columns]
    except _READ_ERRORS as err:
        raise InputError(
            f"{path}: the {what} is truncated or corrupt (header unreadable): {err}"
        ) from err


def iter_csv(
    path: Path,
    columns: Sequence[str],
    *,
    chunk_rows: int,
    what: str,
    dtype: dict[str, object] | None = None,
    sep: str = ",",
    fields: Fields | None = None,
) -> Iterator[pd.DataFrame]:
    """Yield ``chunk_rows``-row frames holding ``columns`` of a CSV / csv.gz file.

    Raises :class:`InputError` naming the file for missing columns, an empty body, a
    truncated or corrupt gzip stream (also when it shows up half-way through the file) and,
    with ``fields``, the line of the first bad value (:func:`check_fields`).
    """
    require_columns(csv_columns(path, what, sep), columns, path)
    n = 0
    try:
        with pd.read_csv(
            path, usecols=list(columns), chunksize=chunk_rows, dtype=dtype, sep=sep
        ) as reader:
            for frame in reader:
                if fields is not None:
                    frame = check_fields(frame, path, fields, first=n + 2)
                n += len(frame)
                yield frame
    except _READ_ERRORS as err:
        raise InputError(
            f"{path}: the {what} is truncated or corrupt after {n} rows: {err}"
        ) from err
    if n == 0:
        raise InputError(f"{path}: the {what} has a header but no rows")


def parquet_columns(path: Path, what: str) -> list[str]:
    """Column names of a parquet file."""
    require_file(path, what)
    try:
        return list(pq.ParquetFile(path).schema_arrow.names)
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"{path}: the {what} is not a readable parquet file: {err}") from err


def iter_parquet(
    path: Path,
    columns: Sequence[str],
    *,
    what: str,
    categorical: Sequence[str] = (),
    fields: Fields | None = None,
) -> Iterator[pd.DataFrame]:
    """Yield one frame per parquet row group (never the whole file) holding ``columns``.

    String columns named in ``categorical`` arrive as pandas categoricals (dictionary
    decoding: one string per distinct value, not per row). With ``fields``, the first bad
    value raises :class:`InputError` naming its field and row (1-based).
    """
    require_columns(parquet_columns(path, what), columns, path)
    try:
        pf = pq.ParquetFile(path, read_dictionary=list(categorical) or None)
        if pf.metadata.num_rows == 0:
            raise InputError(f"{path}: the {what} holds no rows")
        n = 0
        for i in range(pf.num_row_groups):
            frame = pf.read_row_group(i, columns=list(columns)).to_pandas()
            if fields is not None:
                frame = check_fields(frame, path, fields, first=n + 1, unit="row")
            n += len(frame)
            yield frame
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"{path}: the {what} is truncated or corrupt: {err}") from err
