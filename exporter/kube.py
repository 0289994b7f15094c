"""Kubernetes API access: credentials from the official client, traffic over aiohttp.

The `kubernetes` package resolves kubeconfig files (contexts, exec plugins, inline
certificates) and in-cluster service-account credentials. Its typed models are
never used: list and watch bodies are parsed as raw JSON. The bearer token is
fetched from the client configuration before every request, which re-runs exec
plugins and re-reads rotated service-account tokens when they expire.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes.config.incluster_config import InClusterConfigLoader


class KubeConfigError(Exception):
    """The kubeconfig (or in-cluster environment) cannot be used."""


class ApiError(Exception):
    def __init__(self, status: int, reason: str, body: str = "", retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason
        self.body = body
        self.retry_after = retry_after  # seconds the server asked us to wait (429/503 Retry-After)


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After", "")
    try:
        return min(max(float(value), 0.0), 300.0)
    except ValueError:
        return None  # absent, or an HTTP date (the API server sends seconds)


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): relist."""


@dataclass(frozen=True)
class ResourceKind:
    """A watched resource: group ('' for core), version, plural and kind."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace and self.namespaced:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class TokenFile:
    """A bearer token file, read again whenever it changes (kubelet rotates bound tokens)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._token = ""

    def token(self) -> str:
        try:
            st = os.stat(self.path)
        except OSError:
            return self._token  # mid-rotation: keep the last token; the next request reads again
        if (st.st_mtime_ns, st.st_ino) != self._stamp:
            with open(self.path, encoding="utf-8") as handle:
                self._token = handle.read().strip()
            self._stamp = (st.st_mtime_ns, st.st_ino)
        return self._token


@dataclass
class KubeAccess:
    """Where the API server is and how to authenticate: a `kubernetes.client.Configuration`,
    plus the service-account token file when running in a pod."""

    configuration: Any
    token_file: TokenFile | None = None


def load_configuration(
    kubeconfig: str | None, context: str | None = None, service_account_dir: str = SERVICE_ACCOUNT_DIR
) -> KubeAccess:
    """Credentials from a kubeconfig path, else in-cluster, else $KUBECONFIG or ~/.kube/config."""
    configuration = kube_client.Configuration()
    token_file = None
    try:
        if kubeconfig:
            if not os.path.isfile(kubeconfig):
                raise KubeConfigError(f"kubeconfig {kubeconfig}: no such file")
            kube_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            token_path = os.path.join(service_account_dir, "token")
            loader = InClusterConfigLoader(  # type: ignore[no-untyped-call]
                token_filename=token_path, cert_filename=os.path.join(service_account_dir, "ca.crt")
            )
            loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
            token_file = TokenFile(token_path)
        else:
            default = os.path.expanduser(os.environ.get("KUBECONFIG", "~/.kube/config"))
            if not os.path.isfile(default):
                raise KubeConfigError(
                    "no kubeconfig given (--kubeconfig), none at " + default + ", and not running in a pod"
                )
            kube_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=default, context=context, client_configuration=configuration
            )
    except KubeConfigError:
        raise
    except Exception as exc:  # the loader raises several types; all mean "unusable"
        where = kubeconfig or "in-cluster configuration"
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise KubeConfigError(f"kubeconfig {where}: {message}") from exc
    if not configuration.host:
        raise KubeConfigError(f"kubeconfig {kubeconfig}: the selected cluster has no server address")
    return KubeAccess(configuration, token_file)


def _ssl_context(configuration: Any) -> ssl.SSLContext | bool:
    if not configuration.host.startswith("https"):
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    if not configuration.verify_ssl:  # kubeconfig insecure-skip-tls-verify: for test clusters only
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class KubeClient:
    """Minimal async client for list and watch with raw-JSON bodies."""

    def __init__(self, access: KubeAccess, *, connect_timeout: float = 10.0) -> None:
        configuration = access.configuration
        self._configuration = configuration
        self._token_file = access.token_file
        self._host = configuration.host.rstrip("/")
        self._ssl = _ssl_context(configuration)
        self._server_hostname = getattr(configuration, "tls_server_name", None) or None
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def host(self) -> str:
        return str(self._host)

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit=64)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "ml-workload-exporter"}
        if self._token_file is not None:
            headers["Authorization"] = f"Bearer {self._token_file.token()}"
            return headers
        # get_api_key_with_prefix runs the refresh hook: exec plugins and rotated SA tokens.
        # kubernetes>=36.0.3 keeps the token under "BearerToken", older releases "authorization".
        token = self._configuration.get_api_key_with_prefix(
            "BearerToken"
        ) or self._configuration.get_api_key_with_prefix("authorization")
        if token:
            headers["Authorization"] = token
        return headers

    async def create(self, path: str, body: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """POST an object (a review) and return the API server's answer."""
        kwargs = self._request_kwargs({}, timeout)
        kwargs["headers"]["Content-Type"] = "application/json"
        async with self._get_session().post(self._host + path, data=orjson.dumps(body), **kwargs) as resp:
            payload = await resp.read()
            if resp.status not in (200, 201):
                raise ApiError(resp.status, resp.reason or "", payload[:500].decode("utf-8", "replace"))
            answer = orjson.loads(payload)
            return answer if isinstance(answer, dict) else {}

    def _request_kwargs(self, params: Mapping[str, str], read_timeout: float) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "params": dict(params),
            "headers": self._headers(),
            "timeout": aiohttp.ClientTimeout(total=None, connect=self._connect_timeout, sock_read=read_timeout),
        }
        if self._server_hostname:
            kwargs["server_hostname"] = self._server_hostname
        return kwargs

    async def get(self, path: str, params: Mapping[str, str] | None = None, timeout: float = 60.0) -> Any:
        session = self._get_session()
        async with session.get(self._host + path, **self._request_kwargs(params or {}, timeout)) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise ApiError(resp.status, resp.reason or "", body[:500].decode("utf-8", "replace"),
                               _retry_after(resp.headers))  # fmt: skip
            return orjson.loads(body)

    async def watch(self, path: str, params: Mapping[str, str], read_timeout: float) -> AsyncIterator[dict[str, Any]]:
        """Yield watch events (parsed JSON lines) until the server closes the stream."""
        session = self._get_session()
        query = {**params, "watch": "1"}
        async with session.get(self._host + path, **self._request_kwargs(query, read_timeout)) as resp:
            if resp.status != 200:
                body = await resp.read()
                raise ApiError(resp.status, resp.reason or "", body[:500].decode("utf-8", "replace"),
                               _retry_after(resp.headers))  # fmt: skip
            buffer = b""
            # Split on newlines ourselves: objects can exceed aiohttp's line-length limit.
            async for chunk in resp.content.iter_any():
                buffer += chunk
                if b"\n" not in chunk:
                    continue
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield orjson.loads(line)
            if buffer.strip():
                yield orjson.loads(buffer)


class _Offline:
    """A client configuration that is never used to connect."""

    host = "http://127.0.0.1:1"
    verify_ssl = True
    tls_server_name = None


def offline_client() -> KubeClient:
    """A client for sources driven directly (tests, benchmarks): no request is ever made."""
    return KubeClient(KubeAccess(_Offline()))
