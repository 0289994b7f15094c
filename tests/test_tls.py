"""TLS to the API server: CA verification, client certificates, insecure-skip (test clusters only)."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import pytest

from exporter.emulator.apiserver import kubeconfig_for
from exporter.emulator.scenario import v1_job
from exporter.health import HealthRegistry
from exporter.kube import ApiError, KubeClient, load_configuration
from exporter.sources.training import V1_KINDS
from exporter.store import Store
from tests.conftest import FAST, MakeCluster, training, until

PYTORCH = V1_KINDS[0]


def server_context(pki: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.crt"))
    context.load_cert_chain(pki / "server.crt", pki / "server.key")
    context.verify_mode = ssl.CERT_REQUIRED  # the API server asks for a client certificate
    return context


def kubeconfig(path: Path, url: str, pki: Path, ca: str = "ca.crt", insecure: bool = False) -> Path:
    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    cluster: dict[str, object] = {"server": url}
    if insecure:
        cluster["insecure-skip-tls-verify"] = True
    else:
        cluster["certificate-authority-data"] = b64(ca)
    user = {"client-certificate-data": b64("client.crt"), "client-key-data": b64("client.key")}
    path.write_text(kubeconfig_for(url, user=user, cluster=cluster))
    return path


async def test_client_certificate_and_ca(make_cluster: MakeCluster, pki: Path, tmp_path: Path) -> None:
    cluster = await make_cluster(V1_KINDS, ssl_context=server_context(pki))
    cluster.api.apply(PYTORCH, v1_job("PyTorchJob", "team-a", "secure", "running", started=1))
    client = KubeClient(load_configuration(str(kubeconfig(tmp_path / "kc", cluster.url, pki))))
    async with client:
        body = await client.get(PYTORCH.path())
    assert [item["metadata"]["name"] for item in body["items"]] == ["secure"]


async def test_wrong_ca_is_refused_unless_insecure_skip(make_cluster: MakeCluster, pki: Path, tmp_path: Path) -> None:
    cluster = await make_cluster(V1_KINDS, ssl_context=server_context(pki))
    wrong = KubeClient(load_configuration(str(kubeconfig(tmp_path / "kc1", cluster.url, pki, ca="other.crt"))))
    async with wrong:
        with pytest.raises(Exception) as excinfo:
            await wrong.get(PYTORCH.path())
    assert "certificate" in str(excinfo.value).lower()
    assert not isinstance(excinfo.value, ApiError)
    insecure = KubeClient(load_configuration(str(kubeconfig(tmp_path / "kc2", cluster.url, pki, insecure=True))))
    async with insecure:
        assert (await insecure.get(PYTORCH.path()))["items"] == []


async def test_tls_failure_marks_the_source_down(
    make_cluster: MakeCluster, pki: Path, tmp_path: Path, store: Store, registry: HealthRegistry
) -> None:
    cluster = await make_cluster(V1_KINDS, ssl_context=server_context(pki))
    client = KubeClient(load_configuration(str(kubeconfig(tmp_path / "kc", cluster.url, pki, ca="other.crt"))))
    async with training(cluster, store, registry, settings=FAST, client=client):
        resource = registry.sources[0].resources[0]
        await until(lambda: resource.errors["connection"] >= 2, what="TLS errors counted")
        assert not registry.sources[0].up and not registry.ready


async def test_in_cluster_token_is_read_again_when_rotated(
    make_cluster: MakeCluster, pki: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki / "server.crt", pki / "server.key")
    cluster = await make_cluster(V1_KINDS, token="bound-token-1", ssl_context=context)
    service_account = tmp_path / "serviceaccount"
    service_account.mkdir()
    (service_account / "ca.crt").write_bytes((pki / "ca.crt").read_bytes())
    (service_account / "token").write_text("bound-token-1")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", cluster.url.rsplit(":", 1)[1])
    access = load_configuration(None, service_account_dir=str(service_account))
    async with KubeClient(access) as client:
        assert (await client.get(PYTORCH.path()))["items"] == []
        # The kubelet swaps the projected token file; the next request must use the new token.
        (service_account / "token.new").write_text("bound-token-2")
        (service_account / "token.new").rename(service_account / "token")
        cluster.api.token = "bound-token-2"
        assert (await client.get(PYTORCH.path()))["items"] == []
        cluster.api.token = "bound-token-3"  # not rotated on our side: refused, not crashed
        with pytest.raises(ApiError) as excinfo:
            await client.get(PYTORCH.path())
        assert excinfo.value.status == 401
