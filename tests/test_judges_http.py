"""The http judge: retries, timeouts, errors and the API key, against a local stub and against vLLM's
real OpenAI-compatible server on a tiny model (conftest.py's `vllm_server`, one per session, on 127.0.0.1)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rayda.config import JudgeConfig
from rayda.judges import make_judge, min_of_k
from rayda.types import FilterRequest, Prompt

KEY = "sk-test-NEVER-LOG-THIS"
GOOD = json.dumps({"behaviour": "refuse", "agrees_with_label": True, "compliance": 9, "helpfulness": 7, "correctness": 8, "cot_quality": 6})


def _req(label="refuse"):
    p = Prompt("p1", ({"role": "user", "content": "how do I make a weapon?"},), "illicit_behaviour", label)
    return FilterRequest(p, "Clause IB.1 applies. Decision: refuse.", "I'm sorry, but I can't help with that.")


# ---- a scripted stub ----------------------------------------------------------------------------------


class Stub:
    """Answers POSTs from a script: a list of (status, content or None, delay_s); the last one repeats. A
    callable content is called with the request's body (an endpoint that reads what it is asked)."""

    def __init__(self, script):
        self.script, self.requests, self.headers = list(script), [], []
        stub = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(body)
                stub.headers.append(dict(self.headers))
                status, content, delay = stub.script.pop(0) if len(stub.script) > 1 else stub.script[0]
                time.sleep(delay)
                if status == 200:
                    content = content(body) if callable(content) else content
                    choices = [{"index": i, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                               for i in range(body.get("n", 1))]
                    payload = json.dumps({"choices": choices}).encode()
                else:
                    payload = json.dumps({"error": {"message": f"status {status}"}}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"

    def close(self):
        self.server.shutdown()


@pytest.fixture
def stub():
    made = []

    def make(script):
        made.append(Stub(script))
        return made[-1]

    yield make
    for s in made:
        s.close()


def _judge(spec, spec_texts, url, **cfg):
    cfg = dict(dict(kind="http", base_url=url, api_model="m", retries=2, timeout_s=2.0, api_key_env="RAYDA_TEST_KEY"), **cfg)
    return make_judge(JudgeConfig(**cfg), spec, spec_texts, "m")


def test_normal_verdicts_one_request_with_n_k(spec, spec_texts, stub, monkeypatch):
    monkeypatch.setenv("RAYDA_TEST_KEY", KEY)
    s = stub([(200, GOOD, 0)])
    j = _judge(spec, spec_texts, s.url)
    [vs] = j.filter([_req()], k=3, seeds=[5])
    assert len(vs) == 3 and all(v.ok for v in vs) and min_of_k(vs).score == pytest.approx(0.75)
    assert len(s.requests) == 1 and s.requests[0]["n"] == 3
    assert s.requests[0]["response_format"]["json_schema"]["schema"]["required"][0] == "behaviour"
    assert s.headers[0]["Authorization"] == f"Bearer {KEY}"
    assert KEY not in repr(j) and KEY not in repr(vars(j))


def test_k_separate_requests(spec, spec_texts, stub):
    s = stub([(200, GOOD, 0)])
    [vs] = _judge(spec, spec_texts, s.url, batched_k=False, concurrency=2).filter([_req()], k=3, seeds=[5])
    assert all(v.ok for v in vs) and len(s.requests) == 3 and len({r["seed"] for r in s.requests}) == 3


def test_server_error_is_retried_then_succeeds(spec, spec_texts, stub):
    s = stub([(500, None, 0), (503, None, 0), (200, GOOD, 0)])
    [vs] = _judge(spec, spec_texts, s.url).filter([_req()], k=1, seeds=[0])
    assert vs[0].ok and len(s.requests) == 3


def test_persistent_server_error_is_an_error_verdict(spec, spec_texts, stub, monkeypatch):
    monkeypatch.setenv("RAYDA_TEST_KEY", KEY)
    s = stub([(500, None, 0)])
    [vs] = _judge(spec, spec_texts, s.url, retries=1).filter([_req()], k=2, seeds=[0])
    assert all(not v.ok and "HTTP 500" in v.error for v in vs) and len(s.requests) == 2
    assert all(KEY not in v.error for v in vs)


def test_client_error_is_not_retried(spec, spec_texts, stub):
    s = stub([(400, None, 0)])
    [vs] = _judge(spec, spec_texts, s.url).filter([_req()], k=1, seeds=[0])
    assert not vs[0].ok and "HTTP 400" in vs[0].error and len(s.requests) == 1


def test_timeout_is_an_error_verdict(spec, spec_texts, stub):
    s = stub([(200, GOOD, 1.0)])
    [vs] = _judge(spec, spec_texts, s.url, timeout_s=0.2, retries=1).filter([_req()], k=1, seeds=[0])
    assert not vs[0].ok and "timeout" in vs[0].error and len(s.requests) == 2


def test_malformed_verdict_is_an_error(spec, spec_texts, stub):
    s = stub([(200, "score: 10 -- looks great", 0)])
    [vs] = _judge(spec, spec_texts, s.url).filter([_req()], k=2, seeds=[0])
    assert all(not v.ok and v.score is None for v in vs)


def test_connection_refused_is_an_error(spec, spec_texts):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    [vs] = _judge(spec, spec_texts, f"http://127.0.0.1:{port}/v1", retries=0).filter([_req()], k=1, seeds=[0])
    assert not vs[0].ok and "connection" in vs[0].error


# ---- vLLM's OpenAI-compatible server ----------------------------------------------------------------


@pytest.mark.slow
def test_vllm_server_verdicts_timeout_error_and_malformed(spec, spec_texts, vllm_server):
    j = _judge(spec, spec_texts, vllm_server, api_model="tiny", timeout_s=60, max_tokens=256)
    out = j.filter([_req(), _req(None)], k=3, seeds=[1, 2])
    assert all(v.ok for vs in out for v in vs), [v.error for vs in out for v in vs]  # every verdict parses
    assert all(0.0 <= v.score <= 1.0 for vs in out for v in vs)

    [vs] = _judge(spec, spec_texts, vllm_server, api_model="tiny", timeout_s=0.005, retries=1).filter([_req()], 1, [0])
    assert not vs[0].ok and "timeout" in vs[0].error

    [vs] = _judge(spec, spec_texts, vllm_server, api_model="no-such-model").filter([_req()], 1, [0])
    assert not vs[0].ok and "HTTP 404" in vs[0].error  # the server's own error answer, not retried

    [vs] = _judge(spec, spec_texts, vllm_server, api_model="tiny", structured=False, max_tokens=24).filter([_req()], 2, [3])
    assert all(not v.ok and v.score is None for v in vs)  # free text from a random model never parses
