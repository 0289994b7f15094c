"""The emulated API server: object store, event history, HTTP handlers, fault injection."""

from __future__ import annotations

import asyncio
import base64
import copy
import re
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from exporter.emulator.selectors import SelectorError, parse_selectors
from exporter.kube import ResourceKind

CLOSE = "_CLOSE"  # queue sentinel: end the watch stream
Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects


@dataclass
class Fault:
    """An injected failure for requests whose path matches `path` (a regex).

    kind: "status" (answer `status`, e.g. 429 or 500), "gone" (410: a list error or a
    watch ERROR event), "drop" (close the connection; a watch after `after_events`
    events), "slow" (wait `delay` seconds first). `watch`: None = lists and watches.
    """

    kind: str
    path: str = ".*"
    count: int = 1
    status: int = 500
    delay: float = 0.0
    after_events: int = 0
    watch: bool | None = None
    retry_after: float | None = None  # with kind "status": send Retry-After (seconds)

    def matches(self, path: str, is_watch: bool) -> bool:
        return (
            self.count > 0 and re.search(self.path, path) is not None and (self.watch is None or self.watch == is_watch)
        )


@dataclass
class _Watcher:
    namespace: str | None
    matcher: Any
    queue: asyncio.Queue[tuple[int, str, dict[str, Any]]] = field(default_factory=asyncio.Queue)


class _Resource:
    def __init__(self, kind: ResourceKind) -> None:
        self.kind = kind
        self.objects: dict[Key, dict[str, Any]] = {}
        self.history: deque[tuple[int, str, dict[str, Any]]] = deque()
        self.watchers: list[_Watcher] = []


def now_rfc3339(offset: float = 0.0) -> str:
    return datetime.fromtimestamp(time.time() + offset, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.Response(status=code, body=orjson.dumps(body), content_type="application/json")


def _expired(message: str) -> dict[str, Any]:
    """The Status object of a 410 Gone watch event."""
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410,
            "message": message}  # fmt: skip


def _merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


class ApiServer:
    def __init__(
        self,
        kinds: Iterable[ResourceKind] = (),
        *,
        token: str | None = None,
        history: int = 10_000,
        bookmark_interval: float = 5.0,
        users: dict[str, str] | None = None,
        metrics_readers: set[str] | None = None,
    ) -> None:
        """`users`: bearer token -> user name, for TokenReview; `metrics_readers`: the users a
        SubjectAccessReview allows to get non-resource URLs (a ClusterRole on /metrics)."""
        self.token = token
        self.users = users or {}
        self.metrics_readers = metrics_readers or set()
        self.reviews: list[str] = []  # "TokenReview" / "SubjectAccessReview" per review asked, for tests
        self.started = time.time()
        self.history_limit = history
        self.bookmark_interval = bookmark_interval
        self.resource_version = 1
        self.compacted_before = 0  # watches from an older version get 410
        self.resources: dict[str, _Resource] = {}
        self.served: set[str] = set()
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []  # (method, path_qs) of every request, for tests
        for kind in kinds:
            self.install(kind)

    # -- resource registry ---------------------------------------------------------------
    @staticmethod
    def _rkey(group: str, plural: str) -> str:
        return f"{group}/{plural}"

    def install(self, kind: ResourceKind) -> None:
        """Serve this kind (like installing its CRD)."""
        key = self._rkey(kind.group, kind.plural)
        self.resources.setdefault(key, _Resource(kind))
        self.served.add(key)

    def uninstall(self, kind: ResourceKind) -> None:
        self.served.discard(self._rkey(kind.group, kind.plural))

    def _resource(self, kind: ResourceKind) -> _Resource:
        key = self._rkey(kind.group, kind.plural)
        if key not in self.resources:
            self.resources[key] = _Resource(kind)
        return self.resources[key]

    # -- object store ----------------------------------------------------------------------
    def _next_version(self) -> int:
        self.resource_version += 1
        return self.resource_version

    def _record(self, res: _Resource, event: str, obj: dict[str, Any], previous: dict[str, Any] | None) -> None:
        version = int(obj["metadata"]["resourceVersion"])
        res.history.append((version, event, obj))
        while len(res.history) > self.history_limit:
            dropped = res.history.popleft()
            self.compacted_before = max(self.compacted_before, dropped[0])
        for watcher in res.watchers:
            now = self._visible(watcher.namespace, watcher.matcher, obj)
            before = previous is not None and self._visible(watcher.namespace, watcher.matcher, previous)
            # As the API server does: an object entering a selector is ADDED, one leaving it DELETED.
            if now:
                watcher.queue.put_nowait((version, "ADDED" if event == "MODIFIED" and not before else event, obj))
            elif before and event == "MODIFIED":
                watcher.queue.put_nowait((version, "DELETED", obj))

    @staticmethod
    def _visible(namespace: str | None, matcher: Any, obj: dict[str, Any]) -> bool:
        metadata = obj.get("metadata", {})
        if namespace and metadata.get("namespace") != namespace:
            return False
        return bool(matcher(obj))

    def apply(self, kind: ResourceKind, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object; fills uid, resourceVersion, creationTimestamp."""
        res = self._resource(kind)
        obj = copy.deepcopy(obj)
        metadata = obj.setdefault("metadata", {})
        key = (metadata.get("namespace", "") if kind.namespaced else "", metadata["name"])
        existing = res.objects.get(key)
        obj.setdefault("apiVersion", kind.api_version)
        obj.setdefault("kind", kind.kind)
        if existing is not None:
            metadata["uid"] = existing["metadata"]["uid"]
            metadata.setdefault("creationTimestamp", existing["metadata"]["creationTimestamp"])
        else:
            metadata.setdefault("uid", str(uuid.uuid4()))
            metadata.setdefault("creationTimestamp", now_rfc3339())
        metadata["resourceVersion"] = str(self._next_version())
        res.objects[key] = obj
        self._record(res, "MODIFIED" if existing is not None else "ADDED", obj, existing)
        return obj

    def patch(self, kind: ResourceKind, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        res = self._resource(kind)
        existing = res.objects[(namespace if kind.namespaced else "", name)]
        return self.apply(kind, _merge_patch(existing, patch))

    def delete(self, kind: ResourceKind, namespace: str, name: str) -> dict[str, Any] | None:
        res = self._resource(kind)
        obj = res.objects.pop((namespace if kind.namespaced else "", name), None)
        if obj is not None:
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self._next_version())
            self._record(res, "DELETED", obj, None)
        return obj

    def get(self, kind: ResourceKind, namespace: str, name: str) -> dict[str, Any] | None:
        return self._resource(kind).objects.get((namespace if kind.namespaced else "", name))

    def objects(self, kind: ResourceKind) -> list[dict[str, Any]]:
        return list(self._resource(kind).objects.values())

    def close_watches(self) -> None:
        """End every open watch stream now (as an API server restart or a load balancer would)."""
        for res in self.resources.values():
            for watcher in res.watchers:
                watcher.queue.put_nowait((0, CLOSE, {}))

    def compact(self) -> None:
        """Forget all history: every watch from an older resourceVersion gets 410 Gone."""
        for res in self.resources.values():
            res.history.clear()
        self.compacted_before = self.resource_version

    # -- HTTP --------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=3 * 2**20)  # etcd takes objects up to 1.5 MiB
        app.router.add_get("/version", self._version)
        app.router.add_post("/_emulator/faults", self._add_fault)
        app.router.add_post("/_emulator/compact", self._compact)
        app.router.add_get("/_emulator/reviews", self._reviews_asked)
        app.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", self._token_review)
        app.router.add_post("/apis/authorization.k8s.io/v1/subjectaccessreviews", self._access_review)
        app.router.add_route("*", r"/api/{version}/{rest:.*}", self._core)
        app.router.add_route("*", r"/apis/{group}/{version}/{rest:.*}", self._grouped)
        return app

    async def _reviews_asked(self, _: web.Request) -> web.Response:
        return web.json_response(self.reviews)

    async def _token_review(self, request: web.Request) -> web.Response:
        self.reviews.append("TokenReview")
        review = await request.json()
        user = self.users.get(review.get("spec", {}).get("token", ""))
        review["status"] = {"authenticated": True, "user": {"username": user, "groups": ["system:authenticated"]}} \
            if user else {"authenticated": False}  # fmt: skip
        return web.json_response(review, status=201)

    async def _access_review(self, request: web.Request) -> web.Response:
        self.reviews.append("SubjectAccessReview")
        review = await request.json()
        spec = review.get("spec", {})
        allowed = (
            spec.get("user") in self.metrics_readers and spec.get("nonResourceAttributes", {}).get("verb") == "get"
        )
        review["status"] = {"allowed": allowed}
        return web.json_response(review, status=201)

    async def _version(self, _: web.Request) -> web.Response:
        return web.json_response({"major": "1", "minor": "31", "gitVersion": "v1.31.0-emulator"})

    async def _add_fault(self, request: web.Request) -> web.Response:
        self.faults.append(Fault(**await request.json()))
        return web.json_response({"faults": len(self.faults)})

    async def _compact(self, _: web.Request) -> web.Response:
        self.compact()
        return web.json_response({"compactedBefore": self.compacted_before})

    async def _core(self, request: web.Request) -> web.StreamResponse:
        return await self._dispatch(request, "", request.match_info["version"], request.match_info["rest"])

    async def _grouped(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        return await self._dispatch(request, info["group"], info["version"], info["rest"])

    def _take_fault(self, path: str, is_watch: bool) -> Fault | None:
        for fault in self.faults:
            if fault.matches(path, is_watch):
                fault.count -= 1
                return fault
        return None

    async def _dispatch(self, request: web.Request, group: str, version: str, rest: str) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            return _status(401, "Unauthorized", "Unauthorized")
        parts = [p for p in rest.split("/") if p]
        namespace: str | None = None
        if len(parts) >= 3 and parts[0] == "namespaces":
            namespace, parts = parts[1], parts[2:]
        if not parts or len(parts) > 3:
            return _status(404, "NotFound", "the server could not find the requested resource")
        plural, name = parts[0], (parts[1] if len(parts) > 1 else None)
        rkey = self._rkey(group, plural)
        if rkey not in self.served:
            return _status(404, "NotFound", "the server could not find the requested resource")
        res = self.resources[rkey]
        if res.kind.version != version:
            return _status(404, "NotFound", "the server could not find the requested resource")
        is_watch = request.query.get("watch") in ("1", "true")
        fault = self._take_fault(request.path, is_watch) if request.method == "GET" else None
        if fault is not None:
            if fault.kind == "slow":
                await asyncio.sleep(fault.delay)
            elif fault.kind == "status":
                response = _status(fault.status, "InjectedFault", f"injected HTTP {fault.status}")
                if fault.retry_after is not None:
                    response.headers["Retry-After"] = f"{fault.retry_after:g}"
                return response
            elif fault.kind == "gone" and not is_watch:
                return _status(410, "Expired", "injected: the resourceVersion is too old")
            elif fault.kind == "drop" and not is_watch:
                if request.transport is not None:
                    request.transport.close()
                return web.Response(status=500)
        try:
            if request.method == "GET" and name is None:
                if is_watch:
                    return await self._watch(request, res, namespace, fault)
                return self._list(request, res, namespace)
            return await self._write(request, res, namespace, name)
        except SelectorError as exc:
            return _status(400, "BadRequest", str(exc))

    def _list(self, request: web.Request, res: _Resource, namespace: str | None) -> web.Response:
        matcher = parse_selectors(request.query.get("labelSelector", ""), request.query.get("fieldSelector", ""))
        limit = int(request.query.get("limit") or 0)
        token = request.query.get("continue")
        start_after: list[str] | None = None
        if token:
            state = orjson.loads(base64.urlsafe_b64decode(token))
            if state["rv"] < self.compacted_before:
                return _status(410, "Expired", "The provided continue parameter is too old")
            start_after = state["after"]
        items: list[dict[str, Any]] = []
        remaining = 0
        keys = sorted(res.objects)
        for key in keys:
            if start_after is not None and list(key) <= start_after:
                continue
            obj = res.objects[key]
            if not self._visible(namespace, matcher, obj):
                continue
            if limit and len(items) >= limit:
                remaining += 1
                continue
            items.append(obj)
        metadata: dict[str, Any] = {"resourceVersion": str(self.resource_version)}
        if remaining:
            last = items[-1]["metadata"]
            after = [last.get("namespace", "") if res.kind.namespaced else "", last["name"]]
            metadata["continue"] = base64.urlsafe_b64encode(
                orjson.dumps({"rv": self.resource_version, "after": after})
            ).decode()
            metadata["remainingItemCount"] = remaining
        body = {
            "kind": f"{res.kind.kind}List",
            "apiVersion": res.kind.api_version,
            "metadata": metadata,
            "items": items,
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _watch(
        self, request: web.Request, res: _Resource, namespace: str | None, fault: Fault | None
    ) -> web.StreamResponse:
        matcher = parse_selectors(request.query.get("labelSelector", ""), request.query.get("fieldSelector", ""))
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        bookmarks = request.query.get("allowWatchBookmarks") == "true"
        since = request.query.get("resourceVersion") or "0"
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)

        async def send(event: str, obj: dict[str, Any]) -> None:
            await response.write(orjson.dumps({"type": event, "object": obj}) + b"\n")

        if fault is not None and fault.kind == "gone":
            await send("ERROR", _expired("injected: too old resource version"))
            return response
        watcher = _Watcher(namespace, matcher)
        res.watchers.append(watcher)
        sent = 0
        try:
            if since == "0":  # no version: synthetic ADDED for everything, as the API server does
                for obj in list(res.objects.values()):
                    if self._visible(namespace, matcher, obj):
                        await send("ADDED", obj)
            elif int(since) < self.compacted_before:
                await send("ERROR", _expired(f"too old resource version: {since} ({self.compacted_before})"))
                return response
            else:
                for version, event, obj in list(res.history):
                    if version > int(since) and self._visible(namespace, matcher, obj):
                        await send(event, obj)
                        sent += 1
            deadline = time.monotonic() + timeout
            while True:
                if fault is not None and fault.kind == "drop" and sent >= fault.after_events:
                    if request.transport is not None:
                        request.transport.close()
                    return response
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    _, event, obj = await asyncio.wait_for(watcher.queue.get(), min(left, self.bookmark_interval))
                except TimeoutError:
                    if bookmarks:
                        await send(
                            "BOOKMARK",
                            {
                                "kind": res.kind.kind,
                                "apiVersion": res.kind.api_version,
                                "metadata": {"resourceVersion": str(self.resource_version)},
                            },
                        )
                    continue
                if event == CLOSE:
                    break
                await send(event, obj)
                sent += 1
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            res.watchers.remove(watcher)
        return response

    async def _write(
        self, request: web.Request, res: _Resource, namespace: str | None, name: str | None
    ) -> web.Response:
        kind = res.kind
        if request.method == "POST" and name is None:
            obj = await request.json()
            obj.setdefault("metadata", {})
            if namespace:
                obj["metadata"]["namespace"] = namespace
            if self.get(kind, obj["metadata"].get("namespace", ""), obj["metadata"]["name"]) is not None:
                return _status(409, "AlreadyExists", f"{kind.plural} {obj['metadata']['name']!r} already exists")
            return web.json_response(self.apply(kind, obj), status=201)
        if name is None:
            return _status(405, "MethodNotAllowed", "method not allowed on a collection")
        ns = namespace or ""
        existing = self.get(kind, ns, name)
        if request.method == "GET":
            if existing is None:
                return _status(404, "NotFound", f"{kind.plural} {name!r} not found")
            return web.json_response(existing)
        if request.method == "PUT":
            obj = await request.json()
            obj.setdefault("metadata", {}).update({"name": name, **({"namespace": ns} if ns else {})})
            return web.json_response(self.apply(kind, obj))
        if existing is None:
            return _status(404, "NotFound", f"{kind.plural} {name!r} not found")
        if request.method == "PATCH":
            return web.json_response(self.patch(kind, ns, name, await request.json()))
        if request.method == "DELETE":
            return web.json_response(self.delete(kind, ns, name))
        return _status(405, "MethodNotAllowed", f"method {request.method} not allowed")


def kubeconfig_for(
    url: str,
    token: str | None = None,
    name: str = "emulator",
    *,
    user: dict[str, Any] | None = None,
    cluster: dict[str, Any] | None = None,
) -> str:
    """A kubeconfig document pointing at the emulator: a bearer token, or any `user` entry
    (exec plugin, client certificate); `cluster` adds fields such as the CA."""
    if user is None:
        user = {"token": token} if token else {}
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": url, **(cluster or {})}}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
    return orjson.dumps(document).decode()  # JSON is valid YAML
