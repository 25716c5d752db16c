"""A real nginx as the upstream, started by the tests on free 127.0.0.1 ports (never the
machine's own), and a small forward proxy that speaks CONNECT and absolute-form requests."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.support.servers import free_port, stop_process


class Nginx:
    """nginx with ``/v1/echo`` (200 JSON for any method), ``/v1/files/`` (static, so HEAD, 304
    and large answers), ``/v1/gzip/`` (compressed, so chunked), ``/v1/nocontent`` (204). The
    main server keeps idle connections ``keepalive_timeout``; a second one closes after
    ``keepalive_requests`` answers. Every request is logged with its connection number."""

    def __init__(self, tmp: Path, *, keepalive_timeout: str = "1s", keepalive_requests: int = 3, tls: tuple[Path, Path] | None = None) -> None:
        binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
        if binary is None:
            pytest.fail("nginx is needed: apt-get install -y nginx (.ci/run installs it)")
        self.root = tmp / "nginx"
        (self.root / "files").mkdir(parents=True)
        (self.root / "files" / "small.json").write_text('{"status":"ok","slots":["2026-03-10T09:30:00Z"]}' * 20)
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.root / name).mkdir()
        self.port, self.close_port = free_port(), free_port()
        user = "user root;" if os.geteuid() == 0 else ""
        listen_tls = f"ssl; ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]}" if tls else ""
        common = f"""
        default_type application/json;
        location = /v1/echo {{ return 200 '{{"status":"ok"}}'; }}
        location = /v1/nocontent {{ return 204; }}
        location /v1/files/ {{ alias {self.root}/files/; etag on; }}
        location /v1/gzip/ {{ alias {self.root}/files/; gzip on; gzip_types *; gzip_min_length 0; }}
        """
        (self.root / "nginx.conf").write_text(
            f"""
{user}
worker_processes 1;
daemon off;
pid {self.root}/nginx.pid;
error_log {self.root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format conn '$connection $request_method $uri $status';
    access_log {self.root}/access.log conn;
    client_body_temp_path {self.root}/client_body;
    proxy_temp_path {self.root}/proxy;
    fastcgi_temp_path {self.root}/fastcgi;
    uwsgi_temp_path {self.root}/uwsgi;
    scgi_temp_path {self.root}/scgi;
    server {{
        listen 127.0.0.1:{self.port} {listen_tls};
        keepalive_timeout {keepalive_timeout};
        {common}
    }}
    server {{
        listen 127.0.0.1:{self.close_port} {listen_tls};
        keepalive_requests {keepalive_requests};
        {common}
    }}
}}
"""
        )
        self.process = subprocess.Popen([binary, "-c", str(self.root / "nginx.conf"), "-p", str(self.root)], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    break
            except OSError:
                assert self.process.poll() is None, (self.process.stderr.read() if self.process.stderr else b"").decode()
                time.sleep(0.05)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.closing_url = f"{scheme}://127.0.0.1:{self.close_port}"

    def add_file(self, name: str, size: int) -> None:
        with (self.root / "files" / name).open("wb") as out:
            chunk = os.urandom(1 << 20)
            for _ in range(size >> 20):
                out.write(chunk)
            out.write(chunk[: size & ((1 << 20) - 1)])

    def log(self) -> list[tuple[str, str, str, int]]:
        """(connection, method, path, status) of every request nginx received."""
        path = self.root / "access.log"
        deadline = time.monotonic() + 2
        lines = []
        while time.monotonic() < deadline:  # nginx writes its log after the answer
            lines = [line.split() for line in path.read_text().splitlines()] if path.exists() else []
            time.sleep(0.1)
            again = [line.split() for line in path.read_text().splitlines()] if path.exists() else []
            if again == lines:
                break
        return [(c, m, u, int(s)) for c, m, u, s in lines]

    def stop(self) -> None:
        stop_process(self.process)


class ForwardProxy:
    """An egress proxy: ``CONNECT host:port`` tunnels and absolute-form http requests, resolving
    names through ``hosts`` (so an upstream name exists only behind the proxy). With
    ``credentials`` set, anything without that Basic ``Proxy-Authorization`` gets 407."""

    def __init__(self, hosts: Mapping[str, str], credentials: str | None = None) -> None:
        self.hosts = dict(hosts)
        self.credentials = credentials
        self.seen: list[str] = []  # request lines, as the proxy received them
        self.authorizations: list[str | None] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _resolve(self, authority: str) -> tuple[str, int]:
        host, _, port = authority.rpartition(":")
        return self.hosts.get(host, host), int(port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        self.seen.append(lines[0])
        fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        authorization = fields.get("Proxy-Authorization")
        self.authorizations.append(authorization)
        if self.credentials is not None and authorization != "Basic " + base64.b64encode(self.credentials.encode()).decode():
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"egress\"\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        method, target, _ = lines[0].split(" ", 2)
        if method == "CONNECT":
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._resolve(target))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:  # absolute form: http://host:port/path
            authority, _, path = target.removeprefix("http://").partition("/")
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._resolve(authority if ":" in authority else authority + ":80"))
            kept = [line for line in lines[1:] if line and not line.lower().startswith("proxy-authorization")]
            upstream_writer.write((f"{method} /{path} HTTP/1.1\r\n" + "\r\n".join(kept) + "\r\n\r\n").encode("latin-1"))
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer), return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def private_ca(tmp: Path, *names: str) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate it signed for ``names`` and 127.0.0.1:
    ``(ca_file, cert_file, key_file)``."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pmc-gateway test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return ca_file, cert_file, key_file
