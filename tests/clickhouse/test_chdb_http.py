"""Fidelity of deploy/dev/chdb_http.py, checked with ClickHouse's official Python client.

Starts the real endpoint (chdb, the ClickHouse engine) on a free loopback port for the module.
"""

import datetime
import ipaddress
import os
import socket
import subprocess
import sys
import tempfile
import time

import clickhouse_connect
import pytest
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVER = os.path.join(ROOT, "deploy", "dev", "chdb_http.py")
USER, PASSWORD = "vigil", "s3cr3t"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint():
    data = tempfile.mkdtemp(prefix="chdb-http-test-")
    port = free_port()
    ready = os.path.join(data, "ready")
    proc = subprocess.Popen(
        [sys.executable, SERVER, "--data", os.path.join(data, "db"), "--port", str(port),
         "--user", USER, "--password", PASSWORD, "--ready-file", ready],
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 60
    while not os.path.exists(ready):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "endpoint did not start"
        time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def client(endpoint):
    return clickhouse_connect.get_client(
        host="127.0.0.1", port=endpoint, username=USER, password=PASSWORD, compress="lz4"
    )


def test_typed_round_trip_with_compression(client):
    client.command(
        "CREATE TABLE IF NOT EXISTS rt (id UInt64, name String, at DateTime64(9, 'UTC'), "
        "kind LowCardinality(String), addr IPv6, tags Array(String)) "
        "ENGINE = MergeTree ORDER BY id"
    )
    at = datetime.datetime(2026, 11, 25, 1, 2, 3, 456789, tzinfo=datetime.timezone.utc)
    rows = [
        [1, "plain", at, "exec", ipaddress.ip_address("::1"), ["a"]],
        [2, "nul\x00byte ✓", at, "open", ipaddress.ip_address("10.1.2.3"), []],
    ]
    client.insert("rt", rows, column_names=["id", "name", "at", "kind", "addr", "tags"])
    got = client.query(
        "SELECT id, name, at, kind, addr, tags FROM rt WHERE id >= {lo:UInt64} ORDER BY id",
        parameters={"lo": 1},
    ).result_rows
    assert [r[0] for r in got] == [1, 2]
    assert got[1][1] == "nul\x00byte ✓"
    assert got[0][2].replace(tzinfo=datetime.timezone.utc) == at
    assert got[1][4] == ipaddress.ip_address("::ffff:10.1.2.3")
    assert got[0][5] == ["a"]


def test_errors_carry_clickhouse_codes(endpoint, client):
    with pytest.raises(Exception) as e:
        client.query("SELECT no_such_column FROM rt")
    assert "code: 47" in str(e.value)
    r = requests.post(f"http://127.0.0.1:{endpoint}/", data=b"SELEC 1",
                      headers={"X-ClickHouse-User": USER, "X-ClickHouse-Key": PASSWORD})
    assert r.status_code == 400
    assert r.headers["X-ClickHouse-Exception-Code"] == "62"
    assert r.text.startswith("Code: 62. DB::Exception:")


def test_authentication(endpoint):
    r = requests.post(f"http://127.0.0.1:{endpoint}/", data=b"SELECT 1",
                      auth=(USER, "wrong"))
    assert r.status_code == 401
    assert r.headers["X-ClickHouse-Exception-Code"] == "516"
    r = requests.post(f"http://127.0.0.1:{endpoint}/?user={USER}&password={PASSWORD}",
                      data=b"SELECT 1")
    assert r.status_code == 200 and r.text == "1\n"


def test_query_in_url_and_body_format_and_settings(endpoint):
    auth = (USER, PASSWORD)
    r = requests.post(f"http://127.0.0.1:{endpoint}/?query=SELECT+1+AS+x,", data=b"2 AS y FORMAT JSONEachRow", auth=auth)
    assert r.status_code == 200, r.text
    assert r.json() == {"x": 1, "y": 2}
    assert r.headers["X-ClickHouse-Format"] == "JSONEachRow"
    r = requests.get(f"http://127.0.0.1:{endpoint}/?query=SELECT+getSetting('max_threads')&max_threads=3", auth=auth)
    assert r.text.strip() == "3"
    r = requests.get(f"http://127.0.0.1:{endpoint}/?query=SELECT+1&no_such_setting_xyz=1", auth=auth)
    assert r.status_code == 400 and r.headers["X-ClickHouse-Exception-Code"] == "115"
    assert requests.get(f"http://127.0.0.1:{endpoint}/ping").text == "Ok.\n"


def test_compressed_responses(endpoint):
    auth = (USER, PASSWORD)
    r = requests.get(
        f"http://127.0.0.1:{endpoint}/?query=SELECT+number+FROM+numbers(1000)&enable_http_compression=1",
        headers={"Accept-Encoding": "gzip"}, auth=auth)
    assert r.headers["Content-Encoding"] == "gzip"
    assert r.text.splitlines()[-1] == "999"
    r = requests.get(f"http://127.0.0.1:{endpoint}/?query=SELECT+1&compress=1", auth=auth)
    import importlib
    server = importlib.util.spec_from_file_location("chdb_http", SERVER)
    mod = importlib.util.module_from_spec(server)
    server.loader.exec_module(mod)
    assert mod.decompress_native(r.content) == b"1\n"


def test_deduplication_token_makes_resends_idempotent(client):
    client.command(
        "CREATE TABLE IF NOT EXISTS dd (id UInt64) ENGINE = MergeTree ORDER BY id "
        "SETTINGS non_replicated_deduplication_window = 100"
    )
    for _ in range(3):
        client.insert("dd", [[1], [2], [3]], column_names=["id"],
                      settings={"insert_deduplication_token": "batch-1"})
    assert client.query("SELECT count() FROM dd").result_rows[0][0] == 3


def test_a_body_cut_short_is_not_inserted(endpoint):
    """A client that goes away mid-body (killed, or its request called back) inserts nothing:
    a part of a batch stored under the batch's token would make the whole batch, sent again,
    a duplicate to drop."""
    requests.post(f"http://127.0.0.1:{endpoint}/", auth=(USER, PASSWORD),
                  data=b"CREATE TABLE IF NOT EXISTS cut (id UInt64) ENGINE = MergeTree ORDER BY id")
    query = "/?query=INSERT+INTO+cut+FORMAT+TSV&insert_deduplication_token=cut-1"
    auth = "Authorization: Basic " + __import__("base64").b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    whole_chunk = b"1\n2\n"
    cut = [
        # chunked: a whole chunk, then the connection ends before the terminating chunk
        f"POST {query} HTTP/1.1\r\nHost: x\r\n{auth}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + f"{len(whole_chunk):x}\r\n".encode() + whole_chunk + b"\r\n",
        # chunked: the connection ends inside a chunk
        f"POST {query} HTTP/1.1\r\nHost: x\r\n{auth}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + b"10\r\n3\n4\n",
        # Content-Length larger than what arrives
        f"POST {query} HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Length: 100\r\n\r\n".encode()
        + b"5\n6\n",
    ]
    for request in cut:
        with socket.create_connection(("127.0.0.1", endpoint)) as s:
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(10)
            while s.recv(4096):
                pass
    r = requests.post(f"http://127.0.0.1:{endpoint}/", auth=(USER, PASSWORD),
                      data=b"SELECT count() FROM cut")
    assert r.text.strip() == "0", r.text
    # The whole batch, sent again with the same token, is stored.
    r = requests.post(f"http://127.0.0.1:{endpoint}{query}", auth=(USER, PASSWORD), data=b"1\n2\n")
    assert r.status_code == 200, r.text
    r = requests.post(f"http://127.0.0.1:{endpoint}/", auth=(USER, PASSWORD),
                      data=b"SELECT count() FROM cut")
    assert r.text.strip() == "2", r.text


def test_insert_select_and_values_are_queries(endpoint):
    auth = (USER, PASSWORD)
    url = f"http://127.0.0.1:{endpoint}/"
    assert requests.post(url, data=b"CREATE TABLE IF NOT EXISTS iv (x UInt32) ENGINE = Memory", auth=auth).ok
    assert requests.post(url + "?query=INSERT+INTO+iv+SELECT+{v:UInt32}&param_v=7", auth=auth).ok
    assert requests.post(url, data=b"INSERT INTO iv VALUES (8)", auth=auth).ok
    assert requests.post(url + "?query=INSERT+INTO+iv+FORMAT+CSV", data=b"9\n", auth=auth).ok
    assert requests.post(url, data=b"SELECT groupArray(x) FROM (SELECT x FROM iv ORDER BY x)", auth=auth).text == "[7,8,9]\n"
