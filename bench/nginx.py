"""The HTTP benchmark's ceiling: nginx answering every request with ``return 200`` and a fixed JSON body
as long as a typical serve answer (issue 18's reference for the machine's HTTP stack).

Debian's nginx (the system's, else the binary ``adplatform stack up`` unpacks under ``.stack/tools``),
started in the foreground on a private port with its own configuration, PID file and logs under a
temporary directory, and stopped by its PID. Nothing of the system's nginx (its configuration, its
service, port 80) is touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import msgspec

from adplatform.config import load_config
from adserver.serve import AdBodies
from adserver.token import RequestToken, TokenSigner
from bench.http_stack import wait_http
from bench.index_corpus import make_campaigns
from devstack.install import system_nginx
from devstack.paths import Paths


def nginx_binary() -> str | None:
    """nginx's path: the system's, else the stack's (``devstack.install.fetch_nginx``), if either is there."""
    unpacked = Paths(load_config({}).stack_dir).nginx
    return system_nginx() or (str(unpacked) if unpacked.exists() else None)


def nginx_installed() -> bool:
    return nginx_binary() is not None


def typical_body() -> bytes:
    """A serve answer of typical length: a seed-like ad and a request_id sealed by the development key
    for a known user with a full profile (the token's length depends on what it carries)."""
    config = load_config({})
    signer = TokenSigner(config.token_keys, ttl_s=config.token_ttl_s)
    ad = msgspec.structs.replace(
        make_campaigns(1)[0],
        campaign_id="8cf1b846-8f97-11f0-b7f6-0e087721c0e9",
        text="Acme Lightweight Yoga Mat 7",
        category="Sports & Fitness",
    )
    request_id = signer.issue(
        RequestToken(
            nonce="5f0c3a9e7b21a4f3c",
            campaign_id=ad.campaign_id,
            campaign_version=3,
            issued_ms=1_757_764_800_000,
            user_id="9f2c4e1a7b3d5f60-123",
            clearing_cpm_units=87_500_000,
            auction_cpc_micros=1_130,
            auction_cpa_micros=24_600,
            user_age=34,
            user_gender="F",
            user_device_type="Android Mobile",
            user_city="Mumbai",
        )
    )
    return AdBodies().body(ad, request_id)


def config_text(root: Path, port: int, workers: int, body: bytes) -> str:
    text = body.decode("ascii")
    # The body is quoted for nginx: no ' (it would end the string), no $ (a variable) nor \ (an escape).
    if any(ch in text for ch in "'$\\"):
        raise ValueError("the reference body cannot be quoted for nginx")
    return f"""daemon off;
worker_processes {workers};
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 200 '{text}';
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx_process(port: int, *, workers: int, body: bytes) -> Iterator[subprocess.Popen[bytes]]:
    """nginx (master and ``workers`` workers, its own session) answering ``body`` on ``port``; stopped
    (SIGTERM, then SIGKILL) by the master's PID on exit."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError(
            "nginx not found: run `adplatform stack up` (it fetches Debian's nginx) or install nginx"
        )
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as tmp:
        root = Path(tmp)
        conf = root / "nginx.conf"
        conf.write_text(config_text(root, port, workers, body), encoding="ascii")
        log = open(root / "stderr.log", "wb")  # noqa: SIM115  (closed below)
        cmd = [binary, "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")]
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        try:
            wait_http(f"http://127.0.0.1:{port}/ad/user/warmup/serve", timeout_s=30)
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)  # the master stops its workers
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()
