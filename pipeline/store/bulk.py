"""Many rows in one statement per batch, faster than SQLAlchemy's per-row parameter work.

- ``insert_rows(conn, table, rows)``: on PostgreSQL one ``INSERT .. SELECT .. FROM
  json_to_recordset(:rows)``: the driver sends a short query and one JSON string
  (SQLAlchemy's "insertmanyvalues" sends a VALUES list with one placeholder per value,
  which psycopg parses and escapes value by value); on SQLite one ``executemany``
  straight to the driver, each value converted by its column's own bind processor (the
  same stored bytes as SQLAlchemy would write), a repeated timestamp or list converted
  once. Both go through the Connection, so statement events see them.

Rows are dicts with the same keys; `conflict` names the unique column for "skip rows
that exist" (ON CONFLICT DO NOTHING / INSERT OR IGNORE); `returning` (PostgreSQL only)
gives back those columns of the inserted rows; without it, one `(count,)`.
``insert_batches(conn, table, rows)`` cuts a long list into statements of BATCH_ROWS.
"""

from __future__ import annotations

import datetime as dt
import json
import operator
from typing import Any

from sqlalchemy import Table, text
from sqlalchemy.engine import Connection


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use pipeline.timeutil.utcnow()")
        return value.isoformat()
    return value


def insert_rows(
    conn: Connection,
    table: Table,
    rows: list[dict],
    *,
    conflict: str | None = None,
    returning: tuple[str, ...] = (),
) -> list[tuple]:
    """Insert `rows` into `table` in one statement; the `returning` columns (PostgreSQL),
    else one `(count,)` row: how many rows were inserted."""
    if not rows:
        return [(0,)] if not returning else []
    columns = list(rows[0])
    dialect = conn.dialect
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in columns)
    if dialect.name == "postgresql":
        types = ", ".join(f"{quote(c)} {table.c[c].type.compile(dialect=dialect)}" for c in columns)
        cache: dict = {}
        data = []
        for r in rows:
            item = {}
            for c in columns:
                value = r[c]
                if isinstance(value, dt.datetime):
                    done = cache.get(value)
                    if done is None:
                        done = cache[value] = _json_value(value)
                    value = done
                item[c] = value
            data.append(item)
        sql = f"INSERT INTO {quote(table.name)} ({names}) SELECT {names} FROM json_to_recordset(CAST(:rows AS json)) AS u({types})"
        if conflict:
            sql += f" ON CONFLICT ({quote(conflict)}) DO NOTHING"
        if returning:
            sql += " RETURNING " + ", ".join(quote(c) for c in returning)
        result = conn.execute(text(sql), {"rows": json.dumps(data)})
        return [tuple(r) for r in result.all()] if returning else [(result.rowcount,)]
    if returning:
        raise ValueError("insert_rows: RETURNING only on PostgreSQL; select the rows after the insert")
    processed = [
        (i, process)
        for i, c in enumerate(columns)
        if (process := table.c[c].type._cached_bind_processor(dialect)) is not None
    ]
    memo: dict = {}
    get = operator.itemgetter(*columns)
    values_list = []
    for r in rows:
        values = list(get(r)) if len(columns) > 1 else [get(r)]
        for i, process in processed:
            value = values[i]
            if value is None:
                continue
            if isinstance(value, dt.datetime):
                done = memo.get(value)
                if done is None:
                    done = memo[value] = process(value)
                values[i] = done
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):  # topics: few distinct
                key = tuple(value)
                done = memo.get(key)
                if done is None:
                    done = memo[key] = process(value)
                values[i] = done
            else:
                values[i] = process(value)
        values_list.append(tuple(values))
    verb = "INSERT OR IGNORE" if conflict else "INSERT"
    sql = f"{verb} INTO {quote(table.name)} ({names}) VALUES ({', '.join('?' for _ in columns)})"
    return [(conn.exec_driver_sql(sql, values_list).rowcount,)]


BATCH_ROWS = 5000  # rows per statement in insert_batches: each statement's JSON or executemany stays bounded


def insert_batches(conn: Connection, table: Table, rows: list[dict], *, size: int = BATCH_ROWS) -> int:
    """`insert_rows` over `rows`, `size` rows per statement; how many were inserted."""
    return sum(insert_rows(conn, table, rows[i : i + size])[0][0] for i in range(0, len(rows), size))


IN_CHUNK = 500  # values in one IN (...) list: well under SQLite's and PostgreSQL's parameter limits


def select_in(conn: Connection, query, column, values, *, size: int = IN_CHUNK) -> list:
    """The rows of `query` where `column` is one of `values`, asked for in IN lists of
    at most `size` values (sorted: the same statements for the same values)."""
    ordered = sorted(values)
    return [
        row
        for i in range(0, len(ordered), size)
        for row in conn.execute(query.where(column.in_(ordered[i : i + size])))
    ]


__all__ = ["insert_rows", "insert_batches", "select_in", "BATCH_ROWS", "IN_CHUNK"]
