"""A real `nmt serve` on 127.0.0.1 against hostile or broken clients: bodies nested 100,000 deep,
lone surrogates, numbers out of the graph's types, empty texts, slow and vanishing clients, too many
connections, foreign Host and Origin headers. Every answer is TF Serving's {"error": ...} shape, and
the server keeps answering."""

from __future__ import annotations

import http.client
import json
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nmt

from conftest import call, free_ports, wait_until, wait_until_serving

TIMEOUT_S = 2.0  # --body-timeout-s of the server below
GIVE_UP_S = 6 * TIMEOUT_S  # how long a trickling test client waits for the server to close
MAX_CONNECTIONS = 8
ALLOWED_ORIGIN = "http://allowed.example:3000"
ALLOWED_HOST = "myhost.test"


@pytest.fixture(scope="module")
def served(tiny_run: Path, cycle_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """(base URL, port, stderr file) of `nmt serve` with short timeouts, few connections, one CORS
    origin and one extra host name."""
    from nmt.export import export

    root = tmp_path_factory.mktemp("reliable-serve")
    export(tiny_run, root / "models" / "en-ja")
    export(cycle_run, root / "models" / "lm")
    (root / "models.config").write_text(
        "model_config_list {\n"
        '  config { name: "en-ja" base_path: "models/en-ja" model_platform: "tensorflow" }\n'
        '  config { name: "lm" base_path: "models/lm" model_platform: "tensorflow" }\n'
        "}\n", encoding="utf-8")
    port = free_ports()[0]
    log = root / "stderr.txt"
    with open(log, "w", encoding="utf-8") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "nmt.cli", "serve", "--config", str(root / "models.config"), "--port", str(port),
             "--body-timeout-s", str(TIMEOUT_S), "--max-connections", str(MAX_CONNECTIONS),
             "--cors", ALLOWED_ORIGIN, "--allowed-host", ALLOWED_HOST],
            stderr=stderr, text=True)
    base = wait_until_serving(process, port, log.read_text)
    yield base, port, log
    process.terminate()
    process.wait(timeout=60)


def raw_call(port: int, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.putrequest(method, path, skip_host="Host" in (headers or {}), skip_accept_encoding=True)
        for name, value in {"Content-Length": str(len(body or b"")), **(headers or {})}.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def assert_error(code: int, body: dict | bytes, status: int, message: str) -> None:
    answer = json.loads(body) if isinstance(body, bytes) else body
    assert code == status and list(answer) == ["error"] and message in answer["error"], (code, answer)


POST_ENDPOINTS = ["/v1/models/lm:predict", "/v1/models/en-ja:predict", "/v1/translate", "/v1/next-word",
                  "/v1/generate", "/v1/inspect"]


@pytest.mark.parametrize("path", POST_ENDPOINTS)
@pytest.mark.parametrize("bracket", ["[", "{"])
def test_deeply_nested_json_is_a_400(served, path: str, bracket: str) -> None:
    base, _, _ = served
    code, answer = call(f"{base}{path}", bracket.encode() * 100_000)
    assert_error(code, answer, 400, "JSON nested 100000 levels deep; at most 32 are accepted")
    deep_but_inside = b'{"text": ' + b"[" * 30 + b'"a"' + b"]" * 30 + b"}"  # parses; the value is refused
    assert call(f"{base}{path}", deep_but_inside)[0] == 400
    assert call(f"{base}/healthz")[0] == 200


@pytest.mark.parametrize("path, body", [
    ("/v1/translate", b'{"text": "a\\ud800"}'),
    ("/v1/next-word", b'{"text": "a\\ud800"}'),
    ("/v1/generate", b'{"text": "a\\udfff b"}'),
    ("/v1/inspect", b'{"text": ["ok", "a\\ud800"]}'),
    ("/v1/translate", b'{"text": "a", "model": "\\ud800"}'),
    ("/v1/models/lm:predict", b'{"instances": ["a\\ud800"]}'),
])
def test_lone_surrogates_are_a_400(served, path: str, body: bytes) -> None:
    base, _, _ = served
    code, answer = call(f"{base}{path}", body)
    assert_error(code, answer, 400, "lone UTF-16 surrogate \\ud")
    # A surrogate pair is a real character (U+1F600) and is served.
    assert call(f"{base}/v1/next-word", b'{"text": "north \\ud83d\\ude00"}')[0] == 200


@pytest.mark.parametrize("path, body, message", [
    ("/v1/generate", {"text": "north", "top_k": 2**31}, "top_k must be an integer between 0 (off) and 2147483647"),
    ("/v1/generate", {"text": "north", "top_k": -1}, "top_k must be an integer between 0"),
    ("/v1/generate", {"text": "north", "temperature": 1e308}, "temperature must be a finite number >= 0 (float32)"),
    ("/v1/generate", b'{"text": "north", "temperature": NaN}', "temperature must be a finite number"),
    ("/v1/generate", b'{"text": "north", "temperature": Infinity}', "temperature must be a finite number"),
    ("/v1/generate", b'{"text": "north", "top_p": NaN}', "top_p must be a finite number"),
    ("/v1/generate", {"text": "north", "seed": 2**31}, "seed must be between 0 and 2147483647"),
    ("/v1/generate", {"text": "north", "max_tokens": 2**40}, "max_tokens must be an integer between 1 and 2000"),
    ("/v1/next-word", {"text": "north", "k": 2**63}, "k must be an integer between 1 and"),
    ("/v1/translate", {"text": "hi", "beam": 2**70}, "translation is exported for beam"),
    ("/v1/models/lm:predict", {"signature_name": "generate", "instances": [
        {"text": "north", "max_tokens": 3, "temperature": 1e39, "top_k": 0, "top_p": 1.0, "seed": 0}]},
     "input temperature: numbers outside the float32 range"),
    # NaN is a float's value in TF Serving's JSON; the export's settings rule refuses it before the graph.
    ("/v1/models/lm:predict", b'{"signature_name": "generate", "inputs": {"text": ["north"], "max_tokens": [3], '
     b'"temperature": [NaN], "top_k": [0], "top_p": [1.0], "seed": [0]}}',
     "row 0: temperature must be a finite number, got nan"),
    ("/v1/models/lm:predict", {"signature_name": "next_words", "inputs": {"text": ["north"], "k": [2**31]}},
     "input k: integers out of the int32 range"),
    ("/v1/models/en-ja:predict", {"signature_name": "translate_ids", "inputs": {"ids": [[5, 2**31]], "lengths": [2]}},
     "input ids: integers out of the int32 range"),
    # Ids the graph refuses itself (TF Serving runs the same graph): outside the vocabulary.
    ("/v1/models/en-ja:predict", {"signature_name": "translate_ids", "inputs": {"ids": [[5, -1]], "lengths": [2]}},
     "ids must be in [0, "),
    ("/v1/models/en-ja:predict", {"signature_name": "translate_ids", "inputs": {"ids": [[5, 10**6]], "lengths": [2]}},
     "ids must be in [0, "),
    ("/v1/models/lm:predict",
     {"signature_name": "next_words_ids", "inputs": {"ids": [[4, -3]], "lengths": [2], "k": [2]}},
     "ids must be in [0, 12) (the vocabulary)"),
])
def test_numbers_outside_the_graphs_types_are_a_400(served, path: str, body, message: str) -> None:
    base, _, _ = served
    code, answer = call(f"{base}{path}", body)
    assert_error(code, answer, 400, message)


def test_ids_past_a_rows_length_are_padding_whatever_their_value(served) -> None:
    base, _, _ = served
    url = f"{base}/v1/models/en-ja:predict"
    clean = call(url, {"signature_name": "translate_ids", "inputs": {"ids": [[5, 6, 0]], "lengths": [2]}})
    dirty = call(url, {"signature_name": "translate_ids", "inputs": {"ids": [[5, 6, -9]], "lengths": [2]}})
    assert clean[0] == 200 and dirty == clean


@pytest.mark.parametrize("path, body", [
    ("/v1/translate", {"text": ""}),
    ("/v1/translate", {"text": " \t "}),
    ("/v1/translate", {"text": "", "beam": 1}),
    ("/v1/translate", {"text": ["", "  "], "attention": True}),
    ("/v1/models/en-ja:predict", {"instances": [""]}),
    ("/v1/models/en-ja:predict", {"signature_name": "translate_greedy", "instances": ["", " "]}),
    ("/v1/inspect", {"text": "", "model": "en-ja"}),
    ("/v1/next-word", {"text": ""}),
    ("/v1/generate", {"text": "", "max_tokens": 3}),
    ("/v1/inspect", {"text": ""}),
])
def test_the_empty_text_is_answered_alone_as_batched(served, cycle_run: Path, path: str, body: dict) -> None:
    base, _, _ = served
    code, answer = call(f"{base}{path}", body)
    assert code == 200, answer
    lm = nmt.load(cycle_run)  # the language model's answers are the package's own for the empty text
    if path == "/v1/next-word":
        words = [(w["word"], w["probability"]) for w in answer["next_words"][0]]
        expected = lm.next_words([""], k=5)[0]
        assert [w for w, _ in words] == [w for w, _ in expected] and len(words) == 5
        np.testing.assert_allclose([p for _, p in words], [p for _, p in expected], rtol=1e-4)
    if path == "/v1/generate":
        assert answer["text"] == lm.generate([""], max_tokens=3, temperature=1.0, seed=0)
    if path == "/v1/inspect" and "model" not in body:
        assert answer["results"][0]["tokens"] == lm.inspect.hidden_states("").tokens
    if "translations" in answer:
        assert set(answer["translations"]) == {""}
    if "predictions" in answer and path.startswith("/v1/models/en-ja"):
        assert {p["translations"] for p in answer["predictions"]} == {""}
    if "attention" in answer:
        assert [a["source_tokens"] for a in answer["attention"]] == [[], []]
        assert [a["target_tokens"] for a in answer["attention"]] == [[], []]
    if path == "/v1/inspect" and body.get("model") == "en-ja":
        assert answer["results"][0]["tokens"] == [] and answer["results"][0]["states"] == []


def trickle(port: int, first: bytes, byte: bytes, every_s: float, give_up_s: float) -> tuple[float, bytes]:
    """Sends ``first``, then ``byte`` every ``every_s`` (nothing if empty) until the server answers
    or closes; returns the seconds that took and what came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=give_up_s) as client:
        start, answer = time.monotonic(), b""
        client.sendall(first)
        while time.monotonic() - start < give_up_s:
            readable, _, _ = select.select([client], [], [], every_s)
            if readable:
                break
            if byte:
                client.sendall(byte)
        try:
            while chunk := client.recv(4096):
                answer += chunk
        except ConnectionResetError:
            pass
        return time.monotonic() - start, answer


def test_a_slow_body_gets_408_and_the_connection_is_closed(served) -> None:
    _, port, _ = served
    seconds, answer = trickle(port, b"POST /v1/translate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{",
                              b" ", 0.25, GIVE_UP_S)  # slowloris: a byte every 0.25 s
    # Not before the timeout; after it, well before the client gives up (a loaded machine is slow,
    # a server without the timeout never closes).
    assert TIMEOUT_S - 0.5 < seconds < GIVE_UP_S - TIMEOUT_S
    assert answer.startswith(b"HTTP/1.1 408 ") and b"request body not received within 2 s" in answer


@pytest.mark.parametrize("first, byte", [
    (b"", b""),  # connects and says nothing
    (b"POST /v1/transl", b"a"),  # a request line a byte at a time
    (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"X"),  # headers that never end
    (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 50\r\n\r\n", b"x"),  # a body nobody reads
])
def test_an_idle_or_slow_connection_is_closed(served, first: bytes, byte: bytes) -> None:
    _, port, _ = served
    seconds, answer = trickle(port, first, byte, 0.25, GIVE_UP_S)
    assert seconds < GIVE_UP_S - TIMEOUT_S
    if not first:
        assert answer == b""
    elif b"\r\n\r\n" in first:
        assert answer.startswith(b"HTTP/1.1 200 ")  # answered, then closed when the body did not come
    else:
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout")


def test_connections_past_the_limit_get_503_and_the_server_recovers(served) -> None:
    base, port, _ = served
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS)]
    try:
        # The server counts a connection once it has accepted it: wait for that, bounded.
        assert wait_until(lambda: raw_call(port, "GET", "/healthz")[0] == 503), "never 503 with the connections full"
    finally:
        for s in idle:
            s.close()
    assert wait_until(lambda: call(f"{base}/healthz")[0] == 200), "never recovered once the connections closed"


def test_vanished_clients_log_one_line_each_and_no_traceback(served) -> None:
    base, port, log = served
    before = log.read_text(encoding="utf-8")
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(b"POST /v1/translate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"te")
            time.sleep(0.05)

    def disconnect_lines() -> list[str]:
        added = log.read_text(encoding="utf-8")[len(before):]
        return [line for line in added.splitlines() if "disconnected after 4 bytes of the request body" in line]

    wait_until(lambda: len(disconnect_lines()) >= 10)  # each is logged once the server sees the client gone
    assert call(f"{base}/healthz")[0] == 200
    added = log.read_text(encoding="utf-8")[len(before):]
    assert "Traceback" not in added and "Exception in ASGI application" not in added
    assert len(disconnect_lines()) == 10, added[-3000:]


@pytest.mark.parametrize("host, status", [
    ("127.0.0.1:{port}", 200), ("localhost:{port}", 200), ("[::1]:{port}", 200), (ALLOWED_HOST + ":{port}", 200),
    ("LOCALHOST", 200), ("evil.example:{port}", 403), ("127.0.0.1.nip.io:{port}", 403), ("10.1.2.3:{port}", 403),
])
def test_the_host_header_must_name_this_server(served, host: str, status: int) -> None:
    _, port, _ = served
    code, _, body = raw_call(port, "POST", "/v1/next-word", b'{"text": "north"}', {"Host": host.format(port=port)})
    assert code == status, body
    if status == 403:
        assert_error(code, body, 403, "is not this server's name; start nmt serve with --allowed-host")


def test_cross_origin_browser_requests_are_refused_unless_allowed(served) -> None:
    _, port, _ = served
    body = b'{"text": "north"}'
    # A page elsewhere posting text/plain (no preflight in a browser): refused.
    code, headers, answer = raw_call(port, "POST", "/v1/next-word", body,
                                     {"Origin": "http://evil.example", "Content-Type": "text/plain"})
    assert_error(code, answer, 403, "cross-origin request from 'http://evil.example' refused; start nmt serve with "
                 "--cors http://evil.example")
    assert "access-control-allow-origin" not in headers
    assert raw_call(port, "POST", "/v1/next-word", body, {"Origin": "null"})[0] == 403
    assert raw_call(port, "OPTIONS", "/v1/next-word", None, {"Origin": "http://evil.example",
                                                             "Access-Control-Request-Method": "POST"})[0] == 403
    # The server's own page, and clients that send no Origin, with any content type (curl -d).
    assert raw_call(port, "POST", "/v1/next-word", body, {"Origin": f"http://127.0.0.1:{port}",
                                                          "Content-Type": "application/json"})[0] == 200
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/json"):
        assert raw_call(port, "POST", "/v1/next-word", body, {"Content-Type": content_type})[0] == 200
    # A --cors origin: CORS headers on the answer, and its preflight answered.
    code, headers, _ = raw_call(port, "POST", "/v1/next-word", body, {"Origin": ALLOWED_ORIGIN,
                                                                      "Content-Type": "application/json"})
    assert code == 200 and headers["access-control-allow-origin"] == ALLOWED_ORIGIN and headers["vary"] == "Origin"
    code, headers, _ = raw_call(port, "OPTIONS", "/v1/next-word", None, {
        "Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert code == 204 and headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "POST" in headers["access-control-allow-methods"]
    assert headers["access-control-allow-headers"] == "content-type"


@pytest.mark.parametrize("args, message", [
    (["--body-timeout-s", "0"], "--body-timeout-s must be a positive number of seconds, got 0.0"),
    (["--body-timeout-s", "nan"], "--body-timeout-s must be a positive number"),
    (["--max-connections", "0"], "--max-connections must be positive, got 0"),
    (["--cors", "localhost:3000"], "--cors 'localhost:3000': expected an origin, scheme://host[:port]"),
    (["--cors", "http://a.example/page"], "--cors 'http://a.example/page': expected an origin"),
    (["--allowed-host", "http://x/"], "--allowed-host 'http://x/': expected a host name"),
])
def test_serve_options_are_validated_before_anything_loads(args: list[str], message: str, tmp_path: Path) -> None:
    from faults import run_nmt

    done = run_nmt(["serve", "--config", str(tmp_path / "none.config"), *args], timeout=120)
    assert done.returncode == 2 and f"nmt: error: {message}" in done.stderr, done.stderr[-2000:]


def test_new_serve_options_have_help() -> None:
    from faults import run_nmt

    done = run_nmt(["serve", "--help"], timeout=120)
    text = " ".join(done.stdout.split())  # argparse wraps the help to the terminal's width
    for option in ("--body-timeout-s", "--max-connections", "--allowed-host NAME", "--cors ORIGIN"):
        assert option in text
    assert "get 408" in text and "get 503" in text and "against DNS rebinding" in text
