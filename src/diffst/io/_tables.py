"""Streaming table access (CSV / csv.gz with pandas chunks, parquet by row groups) with
errors that name the file: missing columns, empty files, truncated gzip, unreadable parquet."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from diffst.io.checks import require_columns, require_file
from diffst.io.sample import InputError

__all__ = ["csv_columns", "iter_csv", "iter_parquet", "parquet_columns"]

_READ_ERRORS = (
    EOFError,
    OSError,
    gzip.BadGzipFile,
    zlib.error,
    UnicodeDecodeError,
    pd.errors.ParserError,
    pd.errors.EmptyDataError,
)


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
) -> Iterator[pd.DataFrame]:
    """Yield ``chunk_rows``-row frames holding ``columns`` of a CSV / csv.gz file.

    Raises :class:`InputError` naming the file for missing columns, an empty body and a
    truncated or corrupt gzip stream (also when it shows up half-way through the file).
    """
    require_columns(csv_columns(path, what, sep), columns, path)
    n = 0
    try:
        with pd.read_csv(
            path, usecols=list(columns), chunksize=chunk_rows, dtype=dtype, sep=sep
        ) as reader:
            for frame in reader:
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
    path: Path, columns: Sequence[str], *, what: str, categorical: Sequence[str] = ()
) -> Iterator[pd.DataFrame]:
    """Yield one frame per parquet row group (never the whole file) holding ``columns``.

    String columns named in ``categorical`` arrive as pandas categoricals (dictionary
    decoding: one string per distinct value, not per row).
    """
    require_columns(parquet_columns(path, what), columns, path)
    try:
        pf = pq.ParquetFile(path, read_dictionary=list(categorical) or None)
        if pf.metadata.num_rows == 0:
            raise InputError(f"{path}: the {what} holds no rows")
        for i in range(pf.num_row_groups):
            yield pf.read_row_group(i, columns=list(columns)).to_pandas()
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"{path}: the {what} is truncated or corrupt: {err}") from err
