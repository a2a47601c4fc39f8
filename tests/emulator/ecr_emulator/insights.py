"""CloudWatch Logs Insights, for the query shapes ecr-remediator uses.

moto 5.2.5 parses only ``fields``/``sort``/``limit`` and ignores ``filter``
and ``stats``. This module evaluates, over moto's stored log events:

- ``fields f1, f2`` (``@timestamp``, ``@message``, ``@logStream``, ``@log``
  and fields discovered in JSON messages, nested keys joined with ``.`` and
  array items by index, as Insights names them);
- ``filter EXPR`` with ``and``, ``or``, ``not``, parentheses, ``= != < <= > >=``,
  ``like "substring"``, ``like /regex/``, ``not like``, ``in [...]``, ``not in [...]``;
- ``stats count(*) as n, sum(field) as s by f1, f2`` (``count()`` too);
- ``sort field asc|desc`` and ``limit N`` (default 1,000 rows, at most 10,000);
- ``# comment`` lines.

Anything else is refused with ``MalformedQueryException`` rather than
answered wrongly. Differences from CloudWatch: field discovery has no
1,000-field cap, a missing field never matches (``!=`` included), and a
query reports ``Running`` for a configurable number of polls before
``Complete`` (CloudWatch's timing varies).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

MAX_ROWS = 10_000
DEFAULT_LIMIT = 1_000


class QueryError(ValueError):
    """An error CloudWatch Logs returns, with its code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def malformed(message: str) -> QueryError:
    return QueryError("MalformedQueryException", message)


# -- tokens --------------------------------------------------------------------

TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<regex>/(?:[^/\\]|\\.)+/)
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<op><=|>=|!=|=|<|>|\(|\)|\[|\]|,|\*)
      | (?P<word>[@A-Za-z_][\w.@-]*)
    )""",
    re.VERBOSE,
)


def tokenize(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise malformed(f"unexpected text at {text[pos : pos + 20]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def split_commands(query: str) -> list[str]:
    """The query's commands: split on ``|`` outside strings and regexes, comments dropped."""
    lines = [line for line in query.splitlines() if not line.strip().startswith("#")]
    text = "\n".join(lines)
    commands, current, quote = [], [], ""
    for ch in text:
        if quote:
            current.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch == "/" and (not current or "".join(current).rstrip().endswith(("like", "(", "=", "~"))):
            quote = "/"
        if ch == "|":
            commands.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    commands.append("".join(current).strip())
    return [c for c in commands if c]


def literal(token: tuple[str, str]) -> Any:
    kind, text = token
    if kind == "string":
        return bytes(text[1:-1], "utf-8").decode("unicode_escape")
    if kind == "number":
        return float(text) if "." in text else int(text)
    raise malformed(f"expected a value, got {text!r}")


# -- expressions ---------------------------------------------------------------


class Parser:
    def __init__(self, tokens: list[tuple[str, str]]):
        self.tokens, self.pos = tokens, 0

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        i = self.pos + offset
        return self.tokens[i] if i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise malformed("unexpected end of the query")
        self.pos += 1
        return token

    def word(self, *words: str) -> bool:
        token = self.peek()
        if token and token[0] == "word" and token[1].lower() in words:
            self.pos += 1
            return True
        return False

    def expect(self, text: str) -> None:
        token = self.take()
        if token[1] != text:
            raise malformed(f"expected {text!r}, got {token[1]!r}")

    def expression(self) -> Any:
        left = self.conjunction()
        while self.word("or"):
            left = ("or", left, self.conjunction())
        return left

    def conjunction(self) -> Any:
        left = self.negation()
        while self.word("and"):
            left = ("and", left, self.negation())
        return left

    def negation(self) -> Any:
        if self.word("not"):
            return ("not", self.negation())
        token = self.peek()
        if token and token[1] == "(":
            self.take()
            inner = self.expression()
            self.expect(")")
            return inner
        return self.comparison()

    def comparison(self) -> Any:
        kind, name = self.take()
        if kind != "word":
            raise malformed(f"expected a field name, got {name!r}")
        negated = self.word("not")
        if self.word("like"):
            kind, text = self.take()
            if kind == "regex":
                test: Any = ("regex", re.compile(text[1:-1]))
            elif kind == "string":
                test = ("contains", literal((kind, text)))
            else:
                raise malformed(f"like takes a string or /regex/, got {text!r}")
            node: Any = ("like", name, test)
        elif self.word("in"):
            self.expect("[")
            values = [literal(self.take())]
            while self.peek() and self.peek()[1] == ",":  # type: ignore[index]
                self.take()
                values.append(literal(self.take()))
            self.expect("]")
            node = ("in", name, values)
        else:
            if negated:
                raise malformed("not must be followed by like or in here")
            op = self.take()[1]
            if op not in ("=", "!=", "<", "<=", ">", ">="):
                raise malformed(f"unsupported operator {op!r}")
            return ("cmp", op, name, literal(self.take()))
        return ("not", node) if negated else node


def evaluate(node: Any, row: dict[str, Any]) -> bool:
    kind = node[0]
    if kind == "and":
        return evaluate(node[1], row) and evaluate(node[2], row)
    if kind == "or":
        return evaluate(node[1], row) or evaluate(node[2], row)
    if kind == "not":
        return not evaluate(node[1], row)
    value = row.get(node[1] if kind != "cmp" else node[2])
    if value is None:
        return False
    if kind == "like":
        test = node[2]
        text = str(value)
        return bool(test[1].search(text)) if test[0] == "regex" else test[1] in text
    if kind == "in":
        return any(same(value, v) for v in node[2])
    op, want = node[1], node[3]
    if op == "=":
        return same(value, want)
    if op == "!=":
        return not same(value, want)
    try:
        a, b = float(value), float(want)
    except (TypeError, ValueError):
        a, b = str(value), str(want)  # type: ignore[assignment]
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def same(value: Any, want: Any) -> bool:
    if isinstance(want, int | float) and not isinstance(value, bool):
        try:
            return float(value) == float(want)
        except (TypeError, ValueError):
            return False
    if isinstance(value, bool):
        return str(value).lower() == str(want).lower()
    return str(value) == str(want)


# -- events --------------------------------------------------------------------


def flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}.{k}" if prefix else k, v, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            flatten(f"{prefix}.{i}", v, out)
    elif prefix:
        out[prefix] = value


def fields_of(message: str, timestamp: int, stream: str, group: str, ptr: str) -> dict[str, Any]:
    row: dict[str, Any] = {"@message": message, "@timestamp": timestamp, "@logStream": stream, "@log": group, "@ptr": ptr}
    try:
        doc = json.loads(message)
    except ValueError:
        return row
    if isinstance(doc, dict):
        flatten("", doc, row)
    return row


def show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def timestamp_text(ms: int) -> str:
    import datetime as dt

    ms = int(ms)
    t = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}"


# -- queries -------------------------------------------------------------------


@dataclass
class Query:
    query_id: str
    log_groups: list[str]
    text: str
    start: int
    end: int
    results: list[list[dict[str, str]]]
    statistics: dict[str, float]
    polls_left: int
    status: str = "Running"
    created: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def run(
    text: str, events: list[tuple[str, str, int, str, str]], limit_override: int | None = None
) -> tuple[list[list[dict[str, str]]], dict[str, float]]:
    """Evaluates ``text`` over ``(group, stream, timestamp, message, ptr)`` events."""
    commands = split_commands(text)
    if not commands:
        raise malformed("the query is empty")
    rows: list[dict[str, Any]] = []
    scanned = 0
    bytes_scanned = 0
    for group, stream, ts, message, ptr in events:
        scanned += 1
        bytes_scanned += len(message)
        rows.append(fields_of(message, ts, stream, group, ptr))
    projected: list[str] | None = None
    limit = limit_override or DEFAULT_LIMIT
    sort: tuple[str, bool] | None = None
    aggregated = False
    for command in commands:
        verb, _, rest = command.partition(" ")
        verb = verb.strip().lower()
        rest = rest.strip()
        if verb == "fields":
            projected = [f.strip() for f in rest.split(",") if f.strip()]
        elif verb == "filter":
            parser = Parser(tokenize(rest))
            node = parser.expression()
            if parser.peek() is not None:
                raise malformed(f"unexpected {parser.peek()[1]!r} in filter")  # type: ignore[index]
            rows = [r for r in rows if evaluate(node, r)]
        elif verb == "sort":
            parts = rest.split()
            if not parts or len(parts) > 2 or (len(parts) == 2 and parts[1].lower() not in ("asc", "desc")):
                raise malformed(f"sort takes a field and asc or desc: {rest!r}")
            sort = (parts[0], len(parts) == 2 and parts[1].lower() == "desc")
        elif verb == "limit":
            if not rest.isdigit() or not 1 <= int(rest) <= MAX_ROWS:
                raise malformed(f"limit takes a number from 1 to {MAX_ROWS}: {rest!r}")
            limit = int(rest)
        elif verb == "stats":
            rows, projected = stats(rest, rows)
            aggregated = True
        else:
            raise malformed(f"the emulator does not implement the {verb!r} command")
    matched = len(rows)
    if sort is not None:
        key, desc = sort
        present = [r for r in rows if r.get(key) is not None]
        missing = [r for r in rows if r.get(key) is None]
        present.sort(key=lambda r: sortable(r[key]), reverse=desc)
        rows = present + missing
    elif not aggregated:
        rows.sort(key=lambda r: r["@timestamp"], reverse=True)
    rows = rows[: min(limit, MAX_ROWS)]
    out = []
    for r in rows:
        names = projected if projected is not None else ["@timestamp", "@message"]
        line = []
        for name in names:
            if name in r and r[name] is not None:
                value = timestamp_text(r[name]) if name == "@timestamp" else show(r[name])
                line.append({"field": name, "value": value})
        if not aggregated:
            line.append({"field": "@ptr", "value": r["@ptr"]})
        out.append(line)
    return out, {"recordsMatched": float(matched), "recordsScanned": float(scanned), "bytesScanned": float(bytes_scanned)}


def sortable(value: Any) -> tuple[int, Any]:
    try:
        return (0, float(value))
    except (TypeError, ValueError):
        return (1, str(value))


AGGREGATE = re.compile(r"^(count|sum)\(\s*([^)]*)\s*\)\s+as\s+([A-Za-z_]\w*)$", re.IGNORECASE)


def stats(rest: str, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    parts = re.split(r"\s+by\s+", rest, maxsplit=1, flags=re.IGNORECASE)
    body, by = parts[0], (parts[1] if len(parts) > 1 else "")
    groups = [g.strip() for g in by.split(",") if g.strip()] if by else []
    aggregates = []
    for part in body.split(","):
        m = AGGREGATE.match(part.strip())
        if m is None:
            raise malformed(f"the emulator implements count(*) as name and sum(field) as name in stats, not {part.strip()!r}")
        aggregates.append((m.group(1).lower(), m.group(2).strip(), m.group(3)))
    buckets: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        if any(r.get(g) is None for g in groups):
            continue
        key = tuple(r.get(g) for g in groups)
        bucket = buckets.setdefault(key, {g: r.get(g) for g in groups} | {name: 0 for _, _, name in aggregates})
        for fn, arg, name in aggregates:
            if fn == "count":
                if arg in ("", "*") or r.get(arg) is not None:
                    bucket[name] += 1
            else:
                with contextlib.suppress(TypeError, ValueError):
                    bucket[name] += float(r.get(arg) or 0)
    return list(buckets.values()), groups + [name for _, _, name in aggregates]


class Insights:
    """Queries over moto's logs backend, answered like CloudWatch Logs."""

    def __init__(self) -> None:
        self.queries: dict[str, Query] = {}
        self.running_polls = 1
        self._lock = threading.Lock()

    def start(self, backend: Any, body: dict[str, Any]) -> dict[str, Any]:
        names = list(body.get("logGroupNames") or [])
        if body.get("logGroupName"):
            names.append(body["logGroupName"])
        if not names:
            raise QueryError("InvalidParameterException", "logGroupName or logGroupNames is required")
        for name in names:
            if name not in backend.groups:
                raise QueryError("ResourceNotFoundException", f"Log group '{name}' does not exist for account ID '{backend.account_id}'")
        start, end = body.get("startTime"), body.get("endTime")
        if not isinstance(start, int) or not isinstance(end, int) or start > end:
            raise QueryError("InvalidParameterException", "startTime and endTime are epoch seconds, startTime not after endTime")
        limit = body.get("limit")
        if limit is not None and not (isinstance(limit, int) and 1 <= limit <= MAX_ROWS):
            raise QueryError("InvalidParameterException", f"limit must be from 1 to {MAX_ROWS}")
        events = []
        for name in names:
            group = backend.groups[name]
            for stream in group.streams.values():
                for i, event in enumerate(stream.events):
                    if start * 1000 <= event.timestamp <= end * 1000 + 999:
                        events.append(
                            (name, stream.log_stream_name, event.timestamp, event.message, f"{name}/{stream.log_stream_name}/{i}")
                        )
        results, statistics = run(body.get("queryString") or "", events, limit)
        query_id = str(uuid.uuid4())
        with self._lock:
            self.queries[query_id] = Query(
                query_id, names, body.get("queryString") or "", start, end, results, statistics, self.running_polls
            )
        return {"queryId": query_id}

    def results(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            query = self.queries.get(body.get("queryId") or "")
            if query is None:
                raise QueryError("ResourceNotFoundException", "The query does not exist")
            if query.status == "Running" and query.polls_left > 0:
                query.polls_left -= 1
                partial = {k: v / 2 for k, v in query.statistics.items()}
                return {"status": "Running", "results": [], "statistics": partial}
            if query.status == "Running":
                query.status = "Complete"
            rows = query.results if query.status == "Complete" else []
            return {"status": query.status, "results": rows, "statistics": query.statistics}

    def stop(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            query = self.queries.get(body.get("queryId") or "")
            if query is None:
                raise QueryError("ResourceNotFoundException", "The query does not exist")
            stopped = query.status == "Running"
            if stopped:
                query.status = "Cancelled"
            return {"success": stopped}
