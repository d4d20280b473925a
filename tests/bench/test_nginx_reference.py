"""bench.nginx: the reference body is a real serve answer's length, nginx runs on its own config and
port, answers exactly that body, and is gone after the block."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import orjson
import pytest

from bench.nginx import config_text, nginx_installed, nginx_process, typical_body
from tests.ports import free_port


def test_typical_body_is_a_serve_answer() -> None:
    body = typical_body()
    answer = orjson.loads(body)
    assert list(answer) == ["text", "request_id", "campaign_id", "category"]
    assert answer["request_id"].startswith("dev1.") and len(body) > 300


def test_config_refuses_a_body_nginx_would_misread(tmp_path: Path) -> None:
    for body in (b'{"text":"it\'s"}', b'{"text":"$host"}', b'{"text":"a\\"}'):
        with pytest.raises(ValueError):
            config_text(tmp_path, 8080, 2, body)


@pytest.mark.skipif(not nginx_installed(), reason="nginx is not installed")
def test_nginx_answers_the_body_and_stops() -> None:
    body = typical_body()
    port = free_port()
    url = f"http://127.0.0.1:{port}/ad/user/u1/serve?city=Mumbai"
    with nginx_process(port, workers=1, body=body) as proc, urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200 and r.read() == body
        assert r.headers["content-type"] == "application/json"
    assert proc.returncode is not None
