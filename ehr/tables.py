"""Parquet IO of the contract tables: written and read through their :mod:`ehr.schema` schemas.

:func:`write_table` validates a frame and writes it atomically with its contract schema (types,
nullability, each field's description), so a file documents itself; :func:`read_table` reads a
file back and validates it, with errors that name the file, the column and the row.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ehr.artefacts import atomic_file
from ehr.schema import SchemaError, empty, field_for, schema_of, validate

__all__ = ["write_table", "read_table", "arrow_schema"]


def arrow_schema(df: pd.DataFrame, kind: str) -> pa.Schema:
    """The contract fields of ``df``'s columns (categoricals stay dictionary-encoded), others inferred."""
    extra = [c for c in df.columns if field_for(kind, c) is None]
    inferred = pa.Schema.from_pandas(df[extra], preserve_index=False) if extra else None
    fields = []
    for name in df.columns:
        f = field_for(kind, name)
        if f is None:
            fields.append(inferred.field(name))
            continue
        dtype = df[name].dtype
        if isinstance(dtype, pd.CategoricalDtype):
            index_type = pa.from_numpy_dtype(df[name].cat.codes.dtype)
            f = f.with_type(pa.dictionary(index_type, f.type))
        fields.append(f)
    return pa.schema(fields, metadata=schema_of(kind).metadata)


def write_table(df: pd.DataFrame, path, kind: str) -> Path:
    """Validate ``df`` as table ``kind`` and write it to parquet at ``path`` atomically.

    The file's schema carries the contract: types, nullability and each field's description.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "alarms.parquet"
    >>> _ = write_table(empty("alarms"), p, "alarms")
    >>> pq.read_schema(p).field("fired").metadata[b"description"][:17]
    b'an alarm was rais'
    """
    path = Path(path)
    validate(df, kind, source=str(path))
    table = pa.Table.from_pandas(df, schema=arrow_schema(df, kind), preserve_index=False)
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_table(path, kind: str) -> pd.DataFrame:
    """Read a parquet file as table ``kind``; errors name the file, the column and the row.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "stays.parquet"
    >>> empty("events").to_parquet(p)
    >>> read_table(p, "stays")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ehr.schema.SchemaError: stays (.../stays.parquet): missing column(s) ['source', ...
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected a '{kind}' parquet table)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise SchemaError(f"{kind} ({path}): not a readable parquet file ({exc})") from exc
    df = table.to_pandas()
    # a nullable bool column written from object dtype (True/False/None) without a null comes back
    # as numpy bool; give it back as written
    written = {c["name"]: c["numpy_type"] for c in (table.schema.pandas_metadata or {}).get("columns", [])}
    for name in df.columns:
        if written.get(name) == "object" and pd.api.types.is_bool_dtype(df[name].dtype):
            df[name] = df[name].astype(object)
    return validate(df, kind, source=str(path))
