"""Who may read /metrics: TLS with certificate reload, and Kubernetes authentication and
authorisation of the bearer token (the kube-rbac-proxy model).

With `--web.auth=kubernetes` a scrape must carry a bearer token. The API server says whose it is
(TokenReview), and whether that user may `get` the path as a non-resource URL
(SubjectAccessReview). A Prometheus is typically allowed by a ClusterRole with
`nonResourceURLs: ["/metrics"], verbs: ["get"]`. Answers are cached briefly, so scrapes do not each
cost two API calls. /healthz and /readyz stay open for the kubelet's probes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from exporter.kube import ApiError, KubeClient

log = logging.getLogger(__name__)

TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
OPEN_PATHS = ("/healthz", "/readyz")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ReloadingCertificate:
    """A server TLS context whose certificate is loaded again when its files change.

    A renewed certificate (cert-manager, OpenShift's service CA) is used for new connections
    without a restart. A pair that fails to load is logged, and the last good one stays in use."""

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(cert_file, key_file)
        self._stamp = self._files_stamp()
        self.reloads = 0

    def _files_stamp(self) -> tuple[float, float, int, int]:
        cert, key = os.stat(self.cert_file), os.stat(self.key_file)
        return (cert.st_mtime, key.st_mtime, cert.st_ino, key.st_ino)

    def check(self) -> bool:
        """Reload when either file changed; True when a new pair is in use."""
        try:
            stamp = self._files_stamp()
            if stamp == self._stamp:
                return False
            self.context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            log.error("TLS certificate not reloaded (keeping the previous one): %s", exc)
            return False
        self._stamp = stamp
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.cert_file)
        return True

    async def watch(self, interval: float = 10.0) -> None:
        while True:
            await asyncio.sleep(interval)
            self.check()


class KubernetesAuth:
    """TokenReview + SubjectAccessReview of the scrape's bearer token, cached for `ttl` seconds."""

    def __init__(self, client: KubeClient, ttl: float = 60.0) -> None:
        self.client = client
        self.ttl = ttl
        self._cache: dict[tuple[str, str], tuple[int, float]] = {}  # (token hash, path) -> (status, expiry)

    async def decide(self, token: str, path: str) -> int:
        """200 allowed, 401 unauthenticated, 403 forbidden, 503 the API server could not be asked."""
        key = (hashlib.sha256(token.encode()).hexdigest(), path)
        cached = self._cache.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        try:
            status = await self._ask(token, path)
        except (ApiError, OSError, TimeoutError) as exc:
            log.warning("could not review a scrape's token: %s", exc)
            return 503  # not cached: ask again on the next scrape
        if len(self._cache) > 1000:
            self._cache.clear()
        self._cache[key] = (status, time.monotonic() + self.ttl)
        return status

    async def _ask(self, token: str, path: str) -> int:
        review = await self.client.create(TOKEN_REVIEWS, {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token},
        })  # fmt: skip
        status = review.get("status") or {}
        if not status.get("authenticated"):
            return 401
        user = status.get("user") or {}
        access = await self.client.create(ACCESS_REVIEWS, {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user.get("username", ""), "uid": user.get("uid", ""), "groups": user.get("groups", []),
                     "extra": user.get("extra", {}), "nonResourceAttributes": {"path": path, "verb": "get"}},
        })  # fmt: skip
        return 200 if (access.get("status") or {}).get("allowed") else 403

    def middleware(self) -> Middleware:
        @web.middleware
        async def authorise(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path in OPEN_PATHS:
                return await handler(request)
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer realm="ml-workload-exporter"'})
            decision = await self.decide(token, request.path)
            if decision == 401:
                raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer realm="ml-workload-exporter"'})
            if decision == 403:
                raise web.HTTPForbidden(text=f"not allowed to get {request.path}\n")
            if decision == 503:
                raise web.HTTPServiceUnavailable(text="cannot review the token now\n")
            return await handler(request)

        return authorise
