"""The list/watch loop (a reflector) and the namespace scope shared by every source.

Protocol, as client-go's reflector does it: a paginated list (limit/continue) whose
items are upserted as they arrive and whose missing objects are deleted only at the
end (a scrape never sees a half-empty store); then a watch from the list's
resourceVersion with bookmarks and a server-side timeout. 410 Gone relists; 429,
5xx and broken connections back off with jitter; 404 means the CRD is not
installed: the resource reports absent, counts as synced and is retried slowly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson

from exporter.health import ResourceHealth
from exporter.kube import ApiError, KubeClient, ResourceKind, WatchExpired

log = logging.getLogger(__name__)


class MalformedObject(Exception):
    """An object lacks or mistypes a field a source needs; it is counted and skipped."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Handler(Protocol):
    def upsert(self, obj: dict[str, Any]) -> None: ...

    def delete(self, uid: str) -> None: ...


@dataclass(frozen=True)
class WatchSettings:
    page_size: int = 500
    watch_timeout: float = 300.0  # server-side timeoutSeconds (jittered up to 2x, as client-go)
    read_grace: float = 30.0  # client read timeout beyond the server's
    absent_retry: float = 60.0  # re-probe interval for a resource whose CRD is missing
    backoff_initial: float = 0.5
    backoff_max: float = 30.0


class Backoff:
    def __init__(self, initial: float, maximum: float) -> None:
        self.initial, self.maximum = initial, maximum
        self.delay = initial

    def reset(self) -> None:
        self.delay = self.initial

    async def sleep(self, at_least: float | None = None) -> None:
        """Wait the jittered delay, or longer when the server said how long (Retry-After)."""
        await asyncio.sleep(max(self.delay * random.uniform(0.5, 1.0), at_least or 0.0))  # jitter, half floor
        self.delay = min(self.delay * 2, self.maximum)


class Reflector:
    """Keeps a handler current with one resource in one namespace (or all)."""

    def __init__(
        self,
        client: KubeClient,
        kind: ResourceKind,
        handler: Handler,
        health: ResourceHealth,
        settings: WatchSettings,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        accept: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        self.client = client
        self.kind = kind
        self.handler = handler
        self.health = health
        self.settings = settings
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.accept = accept
        self._uids: set[str] = set()
        self._relist = asyncio.Event()
        self.synced = asyncio.Event()  # set once the first list completed (or the kind is absent)
        self._path = kind.path(namespace)

    def request_relist(self) -> None:
        self._relist.set()

    async def run(self) -> None:
        backoff = Backoff(self.settings.backoff_initial, self.settings.backoff_max)
        while True:
            try:
                self._relist.clear()
                resource_version = await self._list()
                backoff.reset()
                await self._watch_until_relist(resource_version)
                self.health.restarts["relist"] += 1
            except WatchExpired:
                self.health.restarts["gone"] += 1
            except ApiError as exc:
                if exc.status == 404:
                    await self._absent()
                    continue
                self.health.errors[str(exc.status)] += 1
                self.health.restarts["error"] += 1
                self.health.up = False
                log.warning("%s: API error %s %s", self.kind, exc.status, exc.reason)
                await backoff.sleep(exc.retry_after)
            except (TimeoutError, aiohttp.ServerTimeoutError):
                self.health.errors["timeout"] += 1
                self.health.restarts["timeout"] += 1
                self.health.up = False
                await backoff.sleep()
            except orjson.JSONDecodeError as exc:
                self.health.errors["invalid_json"] += 1
                self.health.restarts["error"] += 1
                self.health.up = False
                log.warning("%s: unreadable response: %s", self.kind, exc)
                await backoff.sleep()
            except (aiohttp.ClientError, ConnectionError) as exc:
                self.health.errors["connection"] += 1
                self.health.restarts["error"] += 1
                self.health.up = False
                log.warning("%s: %s: %s", self.kind, type(exc).__name__, exc)
                await backoff.sleep()

    async def _absent(self) -> None:
        if self.health.installed:
            log.info(
                "%s is not served by the API (CRD not installed); retrying every %ss",
                self.kind,
                self.settings.absent_retry,
            )
        self.health.installed = False
        self.health.synced = True
        self.health.up = True
        self.synced.set()
        for uid in self._uids:
            self.handler.delete(uid)
        self._uids.clear()
        self.health.tracked = 0
        with contextlib.suppress(TimeoutError):  # woken early by a relist request
            await asyncio.wait_for(self._relist.wait(), self.settings.absent_retry)

    def _params(self) -> dict[str, str]:
        params = {}
        if self.label_selector:
            params["labelSelector"] = self.label_selector
        if self.field_selector:
            params["fieldSelector"] = self.field_selector
        return params

    async def _list(self) -> str:
        seen: set[str] = set()
        continue_token = ""
        while True:
            params = {**self._params(), "limit": str(self.settings.page_size)}
            if continue_token:
                params["continue"] = continue_token
            try:
                body = await self.client.get(self._path, params, timeout=self.settings.read_grace + 30)
            except ApiError as exc:
                if exc.status == 410 and continue_token:  # continue token expired: list again
                    seen.clear()
                    continue_token = ""
                    self.health.restarts["gone"] += 1
                    continue
                raise
            for obj in body.get("items") or ():
                uid = self._apply(obj)
                if uid:
                    seen.add(uid)
            metadata = body.get("metadata") or {}
            continue_token = metadata.get("continue") or ""
            if not continue_token:
                break
        for uid in self._uids - seen:
            self.handler.delete(uid)
        self._uids = seen
        if not self.health.installed:
            log.info("%s is served now; watching it", self.kind)
        self.health.installed = True
        self.health.synced = True
        self.health.up = True
        self.health.last_sync = time.time()
        self.health.tracked = len(seen)
        self.synced.set()
        return str(metadata.get("resourceVersion") or "")

    def _apply(self, obj: Any) -> str | None:
        """Upsert one object; returns its uid, or None when it was skipped or filtered out."""
        try:
            uid = obj["metadata"]["uid"]
            if not isinstance(uid, str) or not uid:
                raise MalformedObject("no_uid")
        except (KeyError, TypeError):
            self.health.skipped["no_uid"] += 1
            return None
        if self.accept is not None and not self.accept(obj):
            self._forget(uid)
            return None
        try:
            self.handler.upsert(obj)
        except MalformedObject as exc:
            self.health.skipped[exc.reason] += 1
            self._forget(uid)
            log.debug("%s %s skipped: %s", self.kind, uid, exc.reason)
            return None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self.health.skipped["malformed"] += 1
            self._forget(uid)
            log.debug("%s %s skipped: %r", self.kind, uid, exc)
            return None
        return uid

    def _forget(self, uid: str) -> None:
        if uid in self._uids:
            self._uids.discard(uid)
            self.handler.delete(uid)

    async def _watch_until_relist(self, resource_version: str) -> None:
        """Watch until a relist is requested (returns) or an error or 410 Gone raises."""
        watch = asyncio.create_task(self._watch(resource_version))
        relist = asyncio.create_task(self._relist.wait())
        try:
            done, _ = await asyncio.wait({watch, relist}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watch, relist):
                if not task.done():
                    task.cancel()
        if watch in done:
            watch.result()

    async def _watch(self, resource_version: str) -> None:
        while True:
            timeout = self.settings.watch_timeout * random.uniform(1.0, 2.0)
            params = {
                **self._params(),
                "resourceVersion": resource_version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(int(timeout)),
            }
            started, received = time.monotonic(), 0
            async for event in self.client.watch(self._path, params, timeout + self.settings.read_grace):
                received += 1
                kind = event.get("type") if isinstance(event, dict) else None
                obj = event.get("object") if isinstance(event, dict) else None
                if not isinstance(kind, str) or not isinstance(obj, dict):
                    self.health.skipped["bad_event"] += 1
                    continue
                self.health.events[kind] += 1
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise WatchExpired()
                    raise ApiError(int(obj.get("code") or 500), str(obj.get("message") or "watch error"))
                metadata = obj.get("metadata")
                new_version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
                if kind == "BOOKMARK":
                    if new_version:
                        resource_version = str(new_version)
                    continue
                if kind in ("ADDED", "MODIFIED"):
                    uid = self._apply(obj)
                    if uid:
                        self._uids.add(uid)
                elif kind == "DELETED":
                    uid = metadata.get("uid") if isinstance(metadata, dict) else None
                    if isinstance(uid, str):
                        self._forget(uid)
                else:
                    self.health.skipped["bad_event"] += 1
                    continue
                self.health.tracked = len(self._uids)
                if new_version:
                    resource_version = str(new_version)
            # The server ended the watch at timeoutSeconds: resume from the last version. A stream
            # that a proxy closes at once would otherwise become a hot loop of requests.
            if not received and time.monotonic() - started < 1.0:
                self.health.restarts["empty_watch"] += 1
                await asyncio.sleep(min(1.0, self.settings.backoff_max) * random.uniform(0.5, 1.0))


NAMESPACES = ResourceKind("", "v1", "namespaces", "Namespace", namespaced=False)


class NamespaceScope:
    """Which namespaces every source watches: all, a fixed list, or those matching a label selector.

    With a selector, sources watch cluster-wide and keep only objects of matching
    namespaces; when the matching set changes, every reflector relists, so objects
    of namespaces that left are dropped and those of newcomers are picked up.
    """

    def __init__(
        self, namespaces: list[str] | None = None, selector: str | None = None, shard: tuple[int, int] = (0, 1)
    ) -> None:
        self.namespaces = namespaces or []
        self.selector = selector
        self.shard, self.total_shards = shard
        self.allowed: set[str] = set()
        self._names_by_uid: dict[str, str] = {}
        self._reflectors: list[Reflector] = []
        self.ready = asyncio.Event()
        if not selector:
            self.ready.set()

    @property
    def watch_namespaces(self) -> list[str | None]:
        if self.namespaces:
            return [ns for ns in self.namespaces if self.owns(ns)]
        return [None]

    @property
    def owns_singletons(self) -> bool:
        """Cluster-scoped objects and fixed-namespace watches belong to shard 0 only."""
        return self.shard == 0

    def owns(self, namespace: str) -> bool:
        """Whether this shard serves `namespace`. Shards split by namespace: every join the sources
        make (a job and its pods, an InferenceService and its pods' version) stays on one shard."""
        return self.total_shards == 1 or zlib.crc32(namespace.encode()) % self.total_shards == self.shard

    def accept(self) -> Callable[[dict[str, Any]], bool] | None:
        if not self.selector and self.total_shards == 1:
            return None

        def accept(obj: dict[str, Any]) -> bool:
            namespace = obj.get("metadata", {}).get("namespace")
            if not isinstance(namespace, str):
                return False
            return (not self.selector or namespace in self.allowed) and self.owns(namespace)

        return accept

    def register(self, reflector: Reflector) -> None:
        self._reflectors.append(reflector)

    # Handler interface for the namespace reflector.
    def upsert(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if self._names_by_uid.get(obj["metadata"]["uid"]) != name:
            self._names_by_uid[obj["metadata"]["uid"]] = name
            self._changed()

    def delete(self, uid: str) -> None:
        if self._names_by_uid.pop(uid, None) is not None:
            self._changed()

    def _changed(self) -> None:
        self.allowed = set(self._names_by_uid.values())
        if self.ready.is_set():
            for reflector in self._reflectors:
                reflector.request_relist()
