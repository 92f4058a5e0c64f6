#!/usr/bin/env python3
"""A ClickHouse-compatible HTTP endpoint in front of chdb (the ClickHouse engine, in-process).

For development and tests only: no ClickHouse server newer than 2018 installs from the package
registries this project can reach, but the current engine does, as the `chdb-core` wheel. This
serves the parts of ClickHouse's HTTP interface that clients use:

- the query in the `query` URL parameter and/or the body (concatenated, as ClickHouse does; for
  INSERT ... FORMAT the body is the data), `database`, `default_format`, a trailing FORMAT clause;
- query parameters (`param_<name>`, in the URL or as multipart/form-data fields) for `{name:Type}`;
- any other URL parameter as a setting (`insert_deduplication_token`, `max_execution_time`, ...);
- users and passwords (`X-ClickHouse-User`/`X-ClickHouse-Key`, HTTP basic auth, `user`/`password`);
- compressed bodies: `decompress=1` (ClickHouse native blocks, CityHash128-checked, LZ4 or none)
  and `Content-Encoding: lz4|gzip|deflate` for requests; `compress=1` (native blocks) and, with
  `enable_http_compression=1`, `Accept-Encoding: lz4|gzip|deflate` for responses;
- ClickHouse-style errors (`Code: N. DB::Exception: ...`, `X-ClickHouse-Exception-Code`, HTTP
  status by code) and headers (`X-ClickHouse-Query-Id`, `-Format`, `-Timezone`, `-Summary`);
- `/ping` and `/replicas_status`.

And, standing in for ClickHouse's access control (embedded chdb has no writable user directory
and no impersonation, so its own GRANTs cannot run here):
- users with grants from `--users FILE` (JSON: `{"name": {"password": "...", "access": "all"}}`
  or `{"name": {"password": "...", "grants": [{"privilege": "insert", "database": "vigil",
  "table": "events"}, ...]}}`, the form `vigil db grants --json` prints): a user with grants may
  run INSERT into and SELECT from the tables granted, and nothing else (no DDL, no ALTER ...
  DELETE/UPDATE, no TRUNCATE, no SET) — the daemons' insert-only user;
- GET is read-only, as in ClickHouse (anything but SELECT/SHOW/DESCRIBE/EXISTS/EXPLAIN refused);
- table functions that reach outside the database (`file()`, `url()`, `s3()`, `remote()`,
  `executable()`, ...) and `INTO OUTFILE` are refused for every user;
- a password is required for every user unless it listens on loopback only (tests).

Production points at a real ClickHouse server (23.8 or newer); see README.md.

    python3 deploy/dev/chdb_http.py --data DIR --port 8123 [--user U --password P] [--users FILE]
"""

import argparse
import os
import base64
import gzip
import json
import re
import signal
import struct
import sys
import threading
import uuid
import zlib
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import lz4.block
import lz4.frame
from chdb import session as chdb_session
from clickhouse_cityhash.cityhash import CityHash128

# Parameters that are part of the protocol, not settings.
PROTOCOL_PARAMS = {
    "query", "database", "default_format", "user", "password", "compress", "decompress",
    "query_id", "session_id", "session_timeout", "session_check", "enable_http_compression",
    "http_zlib_compression_level", "wait_end_of_query", "buffer_size", "quota_key",
    "send_progress_in_http_headers", "http_headers_progress_interval_ms", "role",
}
# ClickHouse error codes that are not server faults, with the HTTP status ClickHouse uses.
HTTP_STATUS = {
    60: 404,   # UNKNOWN_TABLE
    81: 404,   # UNKNOWN_DATABASE
    62: 400,   # SYNTAX_ERROR
    27: 400,   # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    33: 400,   # CANNOT_READ_ALL_DATA
    36: 400,   # BAD_ARGUMENTS
    47: 400,   # UNKNOWN_IDENTIFIER
    46: 400,   # UNKNOWN_FUNCTION
    73: 400,   # UNKNOWN_FORMAT
    115: 400,  # UNKNOWN_SETTING
    456: 400,  # UNKNOWN_QUERY_PARAMETER
    516: 401,  # AUTHENTICATION_FAILED
    432: 400,  # UNKNOWN_CODEC / bad compression
}
FORMAT_RE = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE | re.DOTALL)
INSERT_RE = re.compile(r"^\s*INSERT\s+INTO\s", re.IGNORECASE)
SELECT_OR_VALUES_RE = re.compile(r"\b(SELECT|VALUES)\b", re.IGNORECASE)
INSERT_BODY_RE = re.compile(rb"(?is)(\s*INSERT\s+INTO\s.*?\bFORMAT\s+[A-Za-z0-9_]+)[ \t]*\r?\n?")
SETTING_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CODE_RE = re.compile(r"Code:\s*(\d+)")
# Table functions that read or write outside the database: refused for everyone.
OUTSIDE_RE = re.compile(
    r"\b(file|url|urlCluster|fileCluster|s3|s3Cluster|gcs|hdfs|hdfsCluster|azureBlobStorage|"
    r"azureBlobStorageCluster|remote|remoteSecure|cluster|clusterAllReplicas|mysql|postgresql|"
    r"sqlite|mongodb|redis|jdbc|odbc|executable|iceberg|deltaLake|hudi|input|dictionary)\s*\(",
    re.IGNORECASE,
)
OUTFILE_RE = re.compile(r"\bINTO\s+OUTFILE\b", re.IGNORECASE)
READ_ONLY_RE = re.compile(r"^\s*\(?\s*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXISTS|EXPLAIN)\b", re.IGNORECASE)
INSERT_TARGET_RE = re.compile(r"^\s*INSERT\s+INTO\s+(?:TABLE\s+)?([`\"\w.]+)", re.IGNORECASE)
TABLE_REF_RE = re.compile(r"\b(?:FROM|JOIN)\s+([`\"\w.]+)", re.IGNORECASE)


class ClickHouseError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


# --- ClickHouse native compressed blocks -------------------------------------------------------
# block = checksum (16 bytes, CityHash128 of the rest) | method (1) | compressed size (4, header
#         included) | uncompressed size (4) | data


def _cityhash_bytes(data):
    # ClickHouse stores the two 64-bit halves of CityHash128 (v1.0.2) as this package's high
    # half first, each little-endian (as ClickHouse's own clients write it).
    h = CityHash128(data)
    return struct.pack("<QQ", h >> 64, h & 0xFFFFFFFFFFFFFFFF)


def decompress_native(body):
    out = bytearray()
    pos = 0
    while pos < len(body):
        if len(body) - pos < 25:
            raise ClickHouseError(432, "truncated compressed block header")
        checksum = body[pos:pos + 16]
        method = body[pos + 16]
        csize, usize = struct.unpack_from("<II", body, pos + 17)
        if csize < 9 or pos + 16 + csize > len(body):
            raise ClickHouseError(432, "compressed block size out of range")
        block = body[pos + 16:pos + 16 + csize]
        if _cityhash_bytes(block) != checksum:
            raise ClickHouseError(40, "Checksum doesn't match: corrupted data (CHECKSUM_DOESNT_MATCH)")
        data = block[9:]
        if method == 0x82:
            out += lz4.block.decompress(data, uncompressed_size=usize)
        elif method == 0x02:
            out += data
        else:
            raise ClickHouseError(432, f"unknown compression method 0x{method:02x}")
        pos += 16 + csize
    return bytes(out)


def compress_native(data, block=1 << 20):
    out = bytearray()
    for i in range(0, max(len(data), 1), block):
        chunk = data[i:i + block]
        comp = lz4.block.compress(chunk, store_size=False)
        header = struct.pack("<BII", 0x82, 9 + len(comp), len(chunk))
        framed = header + comp
        out += _cityhash_bytes(framed) + framed
    return bytes(out)


# --- request handling --------------------------------------------------------------------------


class Engine:
    """One chdb session; chdb is not safe for concurrent use, so requests take turns."""

    def __init__(self, path):
        self.session = chdb_session.Session(path)
        self.lock = threading.Lock()

    def run(self, database, sql, fmt, params, data):
        if os.environ.get("CHDB_HTTP_DEBUG"):
            print(f"chdb-http: db={database} fmt={fmt} params={params} data={None if data is None else len(data)} sql={sql!r}", file=sys.stderr, flush=True)
        with self.lock:
            try:
                self.session.query(f"USE `{database}`", "Null")
                if data is not None:
                    inserter = self.session.send_insert(sql, fmt)
                    inserter.append(data)
                    res = inserter.finish()
                    return b"", {"written_rows": str(getattr(res, "rows_written", 0))}
                res = self.session.query(sql, fmt, params=params or None)
                return res.bytes(), {
                    "read_rows": str(getattr(res, "rows_read", lambda: 0)() if callable(getattr(res, "rows_read", None)) else 0),
                }
            except ClickHouseError:
                raise
            except Exception as e:  # chdb raises its own error type carrying ClickHouse's text
                text = str(e)
                m = CODE_RE.search(text)
                raise ClickHouseError(int(m.group(1)) if m else 1000, text)


def parse_multipart(content_type, body):
    msg = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    fields = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[name] = part.get_payload(decode=True) or b""
    return fields


def _qualified(name, database):
    parts = [p.strip('`"') for p in name.split(".")]
    return (parts[0], parts[1]) if len(parts) == 2 else (database, parts[0])


def authorize(user, entry, query, database, method):
    """Raises ClickHouseError unless `user` may run `query`."""
    if OUTSIDE_RE.search(query) or OUTFILE_RE.search(query):
        raise ClickHouseError(497, f"{user}: Not enough privileges: table functions that reach outside the database and INTO OUTFILE are disabled on this endpoint. (ACCESS_DENIED)")
    read_only = bool(READ_ONLY_RE.match(query))
    if method == "GET" and not read_only:
        raise ClickHouseError(164, "Cannot execute query in readonly mode. For queries over HTTP, method GET implies readonly. You should use method POST for modifying queries. (READONLY)")
    if entry.get("access") == "all":
        return
    grants = {(g["privilege"].lower(), g["database"], g["table"]) for g in entry.get("grants", [])}
    target = INSERT_TARGET_RE.match(query)
    if target:
        db, table = _qualified(target.group(1), database)
        if ("insert", db, table) not in grants:
            raise ClickHouseError(497, f"{user}: Not enough privileges. To execute this query, it's necessary to have the grant INSERT ON {db}.{table}. (ACCESS_DENIED)")
        rest = query[target.end():]
    elif read_only:
        rest = query
    else:
        verb = (query.strip().split() or ["?"])[0].upper()
        raise ClickHouseError(497, f"{user}: Not enough privileges: {verb} is not granted to this user. (ACCESS_DENIED)")
    for ref in TABLE_REF_RE.findall(rest):
        db, table = _qualified(ref, database)
        if ("select", db, table) not in grants:
            raise ClickHouseError(497, f"{user}: Not enough privileges. To execute this query, it's necessary to have the grant SELECT ON {db}.{table}. (ACCESS_DENIED)")


def make_handler(engine, users):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "chdb-http"

        def log_message(self, fmt, *args):  # keep test output quiet
            pass

        def _send(self, status, body, headers=None, fmt=None):
            params = self._params if hasattr(self, "_params") else {}
            encoding = None
            if params.get("compress") == "1" and status == 200:
                body = compress_native(body)
            elif params.get("enable_http_compression") == "1" and status == 200:
                accept = self.headers.get("Accept-Encoding", "")
                for candidate in [a.strip().split(";")[0] for a in accept.split(",")]:
                    if candidate == "lz4":
                        body, encoding = lz4.frame.compress(body), "lz4"
                        break
                    if candidate == "gzip":
                        body, encoding = gzip.compress(body), "gzip"
                        break
                    if candidate == "deflate":
                        body, encoding = zlib.compress(body), "deflate"
                        break
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-ClickHouse-Server-Display-Name", "chdb-http")
            self.send_header("X-ClickHouse-Query-Id", getattr(self, "_query_id", str(uuid.uuid4())))
            self.send_header("X-ClickHouse-Timezone", "UTC")
            if not fmt:
                self.send_header("Content-Type", "text/plain; charset=UTF-8")
            else:
                self.send_header("X-ClickHouse-Format", fmt)
                self.send_header("Content-Type", "text/plain; charset=UTF-8" if fmt in ("TabSeparated", "CSV", "JSON", "JSONEachRow", "Pretty") else "application/octet-stream")
            if encoding:
                self.send_header("Content-Encoding", encoding)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            try:
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away (a killed daemon): nothing to answer

        def _error(self, err):
            text = err.message if err.message.startswith("Code:") else f"Code: {err.code}. DB::Exception: {err.message}"
            self._send(
                HTTP_STATUS.get(err.code, 500),
                (text.rstrip() + "\n").encode(),
                {"X-ClickHouse-Exception-Code": str(err.code)},
            )

        def _authenticate(self, params):
            user = self.headers.get("X-ClickHouse-User") or params.get("user")
            password = self.headers.get("X-ClickHouse-Key") or params.get("password")
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                try:
                    user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                except Exception:
                    raise ClickHouseError(516, "malformed basic authentication")
            user = user or "default"
            password = password or ""
            entry = users.get(user)
            if entry is None or entry.get("password", "") != password:
                raise ClickHouseError(516, f"{user}: Authentication failed: password is incorrect, or there is no user with such name. (AUTHENTICATION_FAILED)")
            self._user = (user, entry)

        def do_GET(self):
            self._method = "GET"
            self._handle(b"")

        def do_POST(self):
            self._method = "POST"
            body = self._read_body()
            if body is None:
                # The client went away before its body ended. ClickHouse aborts such an insert;
                # running it on the part that arrived would store part of a batch under the
                # batch's deduplication token, and the whole batch sent again would then be
                # dropped as a duplicate.
                self.close_connection = True
                return
            self._handle(body)

        def _read_body(self):
            """The request body, or None when the connection ended before it did."""
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = bytearray()
                while True:
                    line = self.rfile.readline()
                    if not line.endswith(b"\n"):
                        return None
                    try:
                        size = int(line.split(b";")[0].strip(), 16)
                    except ValueError:
                        return None
                    if size == 0:
                        self.rfile.readline()
                        return bytes(body)
                    chunk = self.rfile.read(size)
                    if len(chunk) != size or not self.rfile.readline().endswith(b"\n"):
                        return None
                    body += chunk
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            return body if len(body) == length else None

        def _handle(self, body):
            url = urlsplit(self.path)
            self._params = dict(parse_qsl(url.query, keep_blank_values=True))
            params = self._params
            self._query_id = params.get("query_id") or str(uuid.uuid4())
            if url.path in ("/ping", "/replicas_status"):
                return self._send(200, b"Ok.\n")
            if url.path not in ("/", ""):
                return self._error(ClickHouseError(1000, f"no handler for {url.path}"))
            try:
                self._authenticate(params)
                encoding = self.headers.get("Content-Encoding", "").lower()
                if encoding == "lz4":
                    body = lz4.frame.decompress(body)
                elif encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                elif encoding not in ("", "identity"):
                    raise ClickHouseError(432, f"unsupported Content-Encoding {encoding}")
                ctype = self.headers.get("Content-Type", "")
                if ctype.startswith("multipart/form-data"):
                    fields = parse_multipart(ctype, body)
                    for k, v in fields.items():
                        params[k] = v.decode()
                    body = b""
                if params.get("decompress") == "1" and body:
                    body = decompress_native(body)
                self._run(params, body)
            except ClickHouseError as e:
                self._error(e)
            except Exception as e:
                self._error(ClickHouseError(1000, f"{type(e).__name__}: {e}"))

        def _run(self, params, body):
            query = params.get("query", "")
            if os.environ.get("CHDB_HTTP_DEBUG"):
                print(f"chdb-http: raw query={query!r} body={body[:60]!r}", file=sys.stderr, flush=True)
            data = None
            if query and INSERT_RE.match(query) and (
                FORMAT_RE.search(query) or not SELECT_OR_VALUES_RE.search(query)
            ):
                data = body  # statement in the URL, data in the body
            elif not query and INSERT_RE.match(body[:64].decode("latin-1")):
                # INSERT ... FORMAT X, then the data, all in the body: split on bytes, the data
                # need not be text.
                m = INSERT_BODY_RE.match(body)
                if m:
                    query, data = m.group(1).decode(), body[m.end():]
                else:
                    query = body.decode("utf-8", "replace")  # INSERT ... VALUES (...) inline
            elif body:
                query = (query + " " if query else "") + body.decode("utf-8", "replace")
            if not query.strip():
                raise ClickHouseError(62, "Empty query. (SYNTAX_ERROR)")
            user, entry = self._user
            authorize(user, entry, query, params.get("database", "default"), getattr(self, "_method", "POST"))
            settings = {
                k: v for k, v in params.items()
                if k not in PROTOCOL_PARAMS and not k.startswith("param_")
            }
            for k in settings:
                if not SETTING_NAME_RE.match(k):
                    raise ClickHouseError(115, f"Unknown setting {k}. (UNKNOWN_SETTING)")
            qparams = {k[len("param_"):]: v for k, v in params.items() if k.startswith("param_")}
            fmt = params.get("default_format", "TabSeparated")
            m = FORMAT_RE.search(query)
            if m:
                fmt = m.group(1)
                query = query[:m.start()].rstrip()
            settings_sql = ", ".join(f"{k} = {sql_literal(v)}" for k, v in settings.items())
            if data is not None:
                if settings_sql:
                    query = f"{query} SETTINGS {settings_sql}"
                out, summary = engine.run(params.get("database", "default"), query, fmt, None, data)
            else:
                if settings_sql:
                    query = f"{query} SETTINGS {settings_sql}"
                out, summary = engine.run(params.get("database", "default"), query, fmt, qparams, None)
            self._send(200, out, {"X-ClickHouse-Summary": json.dumps(summary)}, fmt)

    return Handler


def sql_literal(v):
    if re.fullmatch(r"-?\d+(\.\d+)?", v):
        return v
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="directory for the chdb database files")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--user", default="default")
    ap.add_argument("--password", default="")
    ap.add_argument("--users", help="JSON file of users and their grants (see above)")
    ap.add_argument("--ready-file", help="written with the port once listening")
    args = ap.parse_args()
    users = {args.user: {"password": args.password, "access": "all"}}
    if args.users:
        with open(args.users) as f:
            users.update(json.load(f))
    loopback = args.host in ("127.0.0.1", "::1", "localhost")
    unprotected = [u for u, e in users.items() if not e.get("password")]
    if unprotected and not loopback:
        sys.exit(f"chdb-http: refusing to listen on {args.host} with users without a password: {', '.join(unprotected)} (only a loopback endpoint may have them)")
    engine = Engine(args.data)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(engine, users))
    server.daemon_threads = True

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.ready_file:
        with open(args.ready_file, "w") as f:
            f.write(f"{server.server_address[1]}\n")
    print(f"chdb-http listening on {args.host}:{server.server_address[1]}", file=sys.stderr, flush=True)
    server.serve_forever()
    engine.session.close()


if __name__ == "__main__":
    main()
