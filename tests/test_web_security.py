"""Who may read /metrics: TLS with certificate reload, and TokenReview + SubjectAccessReview of the
scrape's bearer token, against the exporter as a real process and the emulated API server."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.pack import local
from tests.conftest import issue_server_certificate

PROMETHEUS = "system:serviceaccount:openshift-monitoring:prometheus-k8s"


def served_serial(port: int, ca: Path) -> int:
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"], input=der, capture_output=True,
                         check=True)  # fmt: skip
    return int(out.stdout.decode().split("=")[1], 16)


def get(url: str, token: str | None = None, ca: Path | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10, context=context) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@contextlib.contextmanager
def exporter(tmp: Path, kubeconfig: Path, *extra: str, ca: Path | None = None) -> Iterator[int]:
    """The cluster role on a free port; waits until /healthz answers (over TLS when `ca` is given)."""
    port = local.free_port()
    args = [sys.executable, "-m", "exporter", "--kubeconfig", str(kubeconfig), "--sources", "training",
            "--web.listen-address", f"127.0.0.1:{port}", *extra]  # fmt: skip
    url = f"{'https' if ca else 'http'}://127.0.0.1:{port}/healthz"

    def answers() -> bool:
        with contextlib.suppress(OSError):
            return get(url, ca=ca) == 200
        return False

    with local.process(args, tmp / "exporter.log") as proc:
        local.eventually(lambda: proc.poll() is None and answers(), "the exporter", 30)
        yield port


def test_tls_serving_and_certificate_reload_without_restart(tmp_path: Path, pki: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(pki / "server.crt", cert)
    shutil.copy(pki / "server.key", key)
    ca = pki / "ca.crt"
    with local.emulator(tmp_path, "--scenario", "training") as (_, kubeconfig, _):
        tls = ("--web.tls-cert-file", str(cert), "--web.tls-key-file", str(key))
        with exporter(tmp_path, kubeconfig, *tls, ca=ca) as port:
            assert get(f"https://127.0.0.1:{port}/metrics", ca=ca) == 200
            with pytest.raises(OSError):  # plain HTTP is not served (URLError or a dropped connection)
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
            first = served_serial(port, ca)
            renewed_cert, renewed_key = issue_server_certificate(pki, "renewed")
            shutil.copy(renewed_key, key)
            shutil.copy(renewed_cert, cert)
            renewed = local.eventually(lambda: (s := served_serial(port, ca)) != first and s, "the renewed cert", 25)
            assert renewed == served_serial(port, ca)
            assert get(f"https://127.0.0.1:{port}/metrics", ca=ca) == 200  # same process, new certificate


def test_bad_tls_flags_are_named() -> None:
    result = subprocess.run([sys.executable, "-m", "exporter", "--web.tls-cert-file", "/nonexistent.crt"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2
    assert "web.tls-cert-file (flag --web.tls-cert-file): '/nonexistent.crt': no such file" in result.stderr
    half = subprocess.run([sys.executable, "-m", "exporter", "--web.tls-key-file", __file__],
                          capture_output=True, text=True)  # fmt: skip
    assert half.returncode == 2 and "web.tls-cert-file and web.tls-key-file: set both or neither" in half.stderr


def test_kubernetes_auth_reviews_the_token_and_the_path(tmp_path: Path) -> None:
    users = ("--user", f"scrape-token={PROMETHEUS}", "--user", "other-token=system:serviceaccount:team-a:default")
    with contextlib.ExitStack() as stack:
        url, kc, _ = stack.enter_context(
            local.emulator(tmp_path, "--scenario", "training", *users, "--metrics-reader", PROMETHEUS)
        )
        port = stack.enter_context(exporter(tmp_path, kc, "--web.auth", "kubernetes"))
        base = f"http://127.0.0.1:{port}"
        assert get(base + "/metrics") == 401  # no token
        assert get(base + "/metrics", "made-up") == 401  # TokenReview: not authenticated
        assert get(base + "/metrics", "other-token") == 403  # authenticated, not allowed on /metrics
        assert get(base + "/metrics", "scrape-token") == 200
        assert get(base + "/healthz") == 200 and get(base + "/readyz") == 200  # probes stay open
        asked = json.loads(local.http_get(url + "/_emulator/reviews")[1])
        for _ in range(5):
            assert get(base + "/metrics", "scrape-token") == 200
        # Answers are cached: five more scrapes cost no further reviews.
        assert json.loads(local.http_get(url + "/_emulator/reviews")[1]) == asked
        assert asked.count("TokenReview") == 3 and asked.count("SubjectAccessReview") == 2


def test_a_broken_renewal_keeps_the_certificate_in_use(tmp_path: Path, pki: Path) -> None:
    from exporter.websecurity import ReloadingCertificate

    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(pki / "server.crt", cert)
    shutil.copy(pki / "server.key", key)
    certificate = ReloadingCertificate(str(cert), str(key))
    assert certificate.check() is False  # nothing changed
    shutil.copy(pki / "other.key", key)  # a key that does not match the certificate
    assert certificate.check() is False and certificate.reloads == 0
    renewed_cert, renewed_key = issue_server_certificate(pki, "renewed-again")
    shutil.copy(renewed_cert, cert)
    shutil.copy(renewed_key, key)
    assert certificate.check() is True and certificate.reloads == 1
