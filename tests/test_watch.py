"""The list/watch engine against the emulated API server over real HTTP."""

from __future__ import annotations

import asyncio
import stat
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from exporter.emulator.apiserver import Fault, kubeconfig_for
from exporter.emulator.scenario import namespace, v1_job
from exporter.health import HealthRegistry
from exporter.kube import KubeClient, load_configuration
from exporter.sources.training import PODS, TRAINJOB, V1_KINDS
from exporter.store import Store
from exporter.watch import NAMESPACES, NamespaceScope, Reflector
from tests.conftest import ALL_KINDS, FAST, PYTORCH, Cluster, MakeCluster, jobs_in, status_of, training, until


def queries(cluster: Cluster, path_part: str, watch: bool | None = None) -> list[dict[str, list[str]]]:
    out = []
    for method, path_qs in cluster.api.requests:
        parsed = urlparse(path_qs)
        q = parse_qs(parsed.query)
        if method == "GET" and path_part in parsed.path and (watch is None or ("watch" in q) == watch):
            out.append(q)
    return out


async def test_paginated_list_then_watch_keeps_store_current(
    make_cluster: MakeCluster, store: Store, registry: HealthRegistry
) -> None:
    cluster = await make_cluster(ALL_KINDS)
    for i in range(7):
        cluster.api.apply(PYTORCH, v1_job("PyTorchJob", "team-a", f"job-{i}", "pending"))
    async with training(cluster, store, registry):
        await until(lambda: registry.ready, what="first sync")
        assert jobs_in(store) == {f"job-{i}" for i in range(7)}
        lists = queries(cluster, "/pytorchjobs", watch=False)
        assert [q["limit"] for q in lists] == [["2"]] * 4
        assert sum("continue" in q for q in lists) == 3

        cluster.api.apply(PYTORCH, v1_job("PyTorchJob", "team-a", "job-0", "running", started=5))
        cluster.api.apply(PYTORCH, v1_job("PyTorchJob", "team-a", "job-new", "pending"))
        cluster.api.delete(PYTORCH, "team-a", "job-1")
        await until(lambda: "job-new" in jobs_in(store) and "job-1" not in jobs_in(store), what="watch events")
        await until(lambda: status_of(store, "job-0") == "running", what="status change")
        watch = queries(cluster, "/pytorchjobs", watch=True)[0]
        assert watch["allowWatchBookmarks"] == ["true"] and int(watch["timeoutSeconds"][0]) >= 30
        resource = next(r for r in registry.sources[0].resources if r.resource == "pytorchjobs.kubeflow.org")
        assert resource.events["ADDED"] >= 1 and resource.events["DELETED"] == 1
        assert resource.tracked == 7


async def test_relist_after_410_drops_objects_deleted_while_disconnected(
    make_cluster: MakeCluster, store: Store, registry: HealthRegistry
) -> None:
    cluster = await make_cluster(ALL_KINDS)
    for name in ("keep", "lost"):
        cluster.api.apply(PYTORCH, v1_job("PyTorchJob", "team-a", name, "running", started=10))
    async with training(cluster, store, registry):
        await until(lambda: registry.ready, what="first sync")
        # The watch drops; meanwhile the job is deleted and the history compacted away.
        cluster.api.close_watches()
        cluster.api.delete(PYTORCH, "team-a", "lost")
        cluster.api.compact()
        await until(lambda: jobs_in(store) == {"keep"}, what="relist")
        resource = next(r for r in registry.sources[0].resources if r.resource == "pytorchjobs.kubeflow.org")
        assert resource.restarts["gone"] >= 1
        assert len(queries(cluster, "/pytorchjobs", watch=False)) >= 2  # listed again


async def test_api_errors_back_off_and_recover(
    make_cluster: MakeCluster, store: Store, registry: HealthRegistry
) -> None:
    cluster = await make_cluster(ALL_KINDS)
    cluster.api.apply(PYTORCH, v1_job("PyTorchJob", "team-a", "survivor", "running", started=1))
    cluster.api.faults += [
        Fault("status", path="pytorchjobs", status=429, count=2, watch=False),
        Fault("status", path="pytorchjobs", status=500, count=1, watch=False),
        Fault("slow", path="tfjobs", delay=0.3, count=1),
    ]
    async with training(cluster, store, registry):
        await until(lambda: registry.ready, what="sync despite errors")
        resource = next(r for r in registry.sources[0].resources if r.resource == "pytorchjobs.kubeflow.org")
        assert resource.errors == {"429": 2, "500": 1}
        assert registry.sources[0].up and jobs_in(store) == {"survivor"}


async def test_dropped_watch_connection_resumes_without_losing_events(
    make_cluster: MakeCluster, store: Store, registry: HealthRegistry
) -> None:
    cluster = await make_cluster(ALL_KINDS)
    cluster.api.faults.append(Fault("drop", path="pytorchjobs", watch=True, after_events=1))
    async with training(cluster, store, registry):
        await until(lambda: registry.ready, what="first sync")
        cluster.api.apply(PYTORCH, v1_job("PyTorchJob", "team-a", "a", "pending"))
        cluster.api.apply(PYTORCH, v1_job("PyTorchJob", "team-a", "b", "pending"))
        await until(lambda: jobs_in(store) == {"a", "b"}, what="both events")
        resource = next(r for r in registry.sources[0].resources if r.resource == "pytorchjobs.kubeflow.org")
        assert resource.errors["connection"] + resource.restarts["error"] >= 1


async def test_missing_crd_counts_as_synced_and_is_picked_up_later(
    make_cluster: MakeCluster, store: Store, registry: HealthRegistry
) -> None:
    cluster = await make_cluster((*V1_KINDS, PODS))  # Trainer v2 is not installed
    async with training(cluster, store, registry):
        await until(lambda: registry.ready, what="ready without the TrainJob CRD")
        trainjobs = next(r for r in registry.sources[0].resources if r.resource == "trainjobs.trainer.kubeflow.org")
        assert not trainjobs.installed and trainjobs.synced and registry.sources[0].up
        probes = len(queries(cluster, "/trainjobs"))
        await asyncio.sleep(0.5)
        assert len(queries(cluster, "/trainjobs")) - probes <= 4  # retried slowly, not in a hot loop

        cluster.api.install(TRAINJOB)
        cluster.api.apply(TRAINJOB, {"metadata": {"name": "late", "namespace": "team-a"}, "spec": {}, "status": {}})
        await until(lambda: "late" in jobs_in(store), what="the CRD's first object")
        assert trainjobs.installed


async def test_malformed_objects_are_counted_and_skipped(
    make_cluster: MakeCluster, store: Store, registry: HealthRegistry
) -> None:
    cluster = await make_cluster(ALL_KINDS)
    cluster.api.apply(PYTORCH, v1_job("PyTorchJob", "team-a", "good", "running", started=1))
    cluster.api.apply(PYTORCH, {"metadata": {"name": "bad-status", "namespace": "team-a"}, "status": "oops"})
    cluster.api.apply(
        PYTORCH,
        {
            "metadata": {"name": "bad-conditions", "namespace": "team-a"},
            "status": {"conditions": "oops", "replicaStatuses": {"Worker": "x"}},
        },
    )
    cluster.api.apply(PYTORCH, {"metadata": {"name": "bad-spec", "namespace": "team-a"}, "spec": [1]})
    async with training(cluster, store, registry):
        await until(lambda: registry.ready, what="first sync")
        # Tolerable damage is read; unreadable objects are skipped and counted by reason.
        assert jobs_in(store) == {"good", "bad-conditions"}
        resource = next(r for r in registry.sources[0].resources if r.resource == "pytorchjobs.kubeflow.org")
        assert resource.skipped == {"bad_status": 1, "bad_spec": 1}
        cluster.api.apply(PYTORCH, {"metadata": {"name": "good", "namespace": "team-a"}, "status": 7})
        await until(lambda: resource.skipped["bad_status"] == 2, what="skip on watch")
        assert "good" not in jobs_in(store)  # its last readable state is withdrawn, nothing else is


async def test_bookmarks_advance_the_resource_version(
    make_cluster: MakeCluster, store: Store, registry: HealthRegistry
) -> None:
    cluster = await make_cluster(ALL_KINDS, bookmark_interval=0.05)
    async with training(cluster, store, registry):
        await until(lambda: registry.ready, what="first sync")
        listed_at = int(queries(cluster, "/tfjobs", watch=True)[0]["resourceVersion"][0])
        for i in range(3):  # activity elsewhere moves the global resourceVersion on
            cluster.api.apply(PYTORCH, v1_job("PyTorchJob", "team-a", f"j{i}", "pending"))
        resource = next(r for r in registry.sources[0].resources if r.resource == "tfjobs.kubeflow.org")
        await until(lambda: resource.events["BOOKMARK"] >= 2, what="bookmarks")
        cluster.api.close_watches()
        await until(lambda: len(queries(cluster, "/tfjobs", watch=True)) >= 2, what="re-watch")
        rewatch_at = int(queries(cluster, "/tfjobs", watch=True)[-1]["resourceVersion"][0])
        assert rewatch_at > listed_at
        assert len(queries(cluster, "/tfjobs", watch=False)) == 1  # no relist needed


async def test_namespace_selector_follows_namespace_labels(
    make_cluster: MakeCluster, store: Store, registry: HealthRegistry
) -> None:
    cluster = await make_cluster(ALL_KINDS)
    cluster.api.apply(NAMESPACES, namespace("team-a"))
    cluster.api.apply(NAMESPACES, namespace("sandbox", dsp=False))
    cluster.api.apply(PYTORCH, v1_job("PyTorchJob", "team-a", "in-project", "pending"))
    cluster.api.apply(PYTORCH, v1_job("PyTorchJob", "sandbox", "outside", "pending"))
    client = cluster.client()
    scope = NamespaceScope(selector="opendatahub.io/dashboard=true")
    ns_reflector = Reflector(
        client,
        NAMESPACES,
        scope,
        registry.source("namespaces").resource("namespaces"),
        FAST,
        label_selector="opendatahub.io/dashboard=true",
    )
    scope.ready = ns_reflector.synced
    ns_task = asyncio.create_task(ns_reflector.run())
    try:
        async with training(cluster, store, registry, scope=scope, client=client):
            await until(lambda: registry.ready, what="first sync")
            assert jobs_in(store) == {"in-project"}
            cluster.api.patch(NAMESPACES, "", "sandbox", {"metadata": {"labels": {"opendatahub.io/dashboard": "true"}}})
            await until(lambda: jobs_in(store) == {"in-project", "outside"}, what="namespace joins")
            cluster.api.patch(NAMESPACES, "", "team-a", {"metadata": {"labels": {"opendatahub.io/dashboard": None}}})
            await until(lambda: jobs_in(store) == {"outside"}, what="namespace leaves")
    finally:
        ns_task.cancel()


async def test_fixed_namespace_list_watches_each_namespace(
    make_cluster: MakeCluster, store: Store, registry: HealthRegistry
) -> None:
    cluster = await make_cluster(ALL_KINDS)
    for ns in ("team-a", "team-b", "team-c"):
        cluster.api.apply(PYTORCH, v1_job("PyTorchJob", ns, f"job-{ns}", "pending"))
    async with training(cluster, store, registry, scope=NamespaceScope(["team-a", "team-b"])):
        await until(lambda: registry.ready, what="first sync")
        assert jobs_in(store) == {"job-team-a", "job-team-b"}
        paths = {urlparse(p).path for m, p in cluster.api.requests if "pytorchjobs" in p}
        assert paths == {
            "/apis/kubeflow.org/v1/namespaces/team-a/pytorchjobs",
            "/apis/kubeflow.org/v1/namespaces/team-b/pytorchjobs",
        }


async def test_pods_are_watched_by_label_only(
    make_cluster: MakeCluster, store: Store, registry: HealthRegistry
) -> None:
    cluster = await make_cluster(ALL_KINDS)
    async with training(cluster, store, registry):
        await until(lambda: registry.ready, what="first sync")
        pod_requests = queries(cluster, "/pods")
        assert pod_requests and all(q.get("labelSelector") for q in pod_requests)
        assert {q["labelSelector"][0] for q in pod_requests} == {
            "training.kubeflow.org/job-name",
            "jobset.sigs.k8s.io/jobset-name",
            "ray.io/cluster",
        }


async def test_rotated_exec_plugin_token_is_fetched_again(
    make_cluster: MakeCluster, tmp_path: Path, store: Store, registry: HealthRegistry
) -> None:
    """Bound tokens expire: the exporter re-runs the kubeconfig's exec plugin instead of caching."""
    cluster = await make_cluster(ALL_KINDS, token="first")
    token_file = tmp_path / "token"
    token_file.write_text("first")
    plugin = tmp_path / "credential-plugin"
    plugin.write_text(
        f"#!{sys.executable}\nimport datetime, json\n"
        "expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1)\n"
        f"print(json.dumps({{'apiVersion': 'client.authentication.k8s.io/v1', 'kind': 'ExecCredential',"
        f" 'status': {{'token': open({str(token_file)!r}).read(),"
        " 'expirationTimestamp': expires.strftime('%Y-%m-%dT%H:%M:%SZ')}}))\n"
    )
    plugin.chmod(plugin.stat().st_mode | stat.S_IEXEC)
    kubeconfig = tmp_path / "exec-kubeconfig"
    exec_plugin = {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin), "interactiveMode": "Never"}
    kubeconfig.write_text(kubeconfig_for(cluster.url, user={"exec": exec_plugin}))
    cluster.api.apply(PYTORCH, v1_job("PyTorchJob", "team-a", "before", "pending"))
    client = KubeClient(load_configuration(str(kubeconfig)))
    async with training(cluster, store, registry, client=client):
        await until(lambda: registry.ready, what="first sync")
        token_file.write_text("second")
        cluster.api.token = "second"
        await asyncio.sleep(2.1)  # the first credential expires
        cluster.api.close_watches()
        cluster.api.apply(PYTORCH, v1_job("PyTorchJob", "team-a", "after", "pending"))
        await until(lambda: "after" in jobs_in(store), timeout=15, what="watch with the new token")
        resource = next(r for r in registry.sources[0].resources if r.resource == "pytorchjobs.kubeflow.org")
        assert resource.errors["401"] <= 1  # at most the one request that raced the rotation


async def test_crd_removed_at_runtime_drops_its_objects_and_comes_back(
    make_cluster: MakeCluster, store: Store, registry: HealthRegistry
) -> None:
    cluster = await make_cluster(ALL_KINDS)
    cluster.api.apply(TRAINJOB, {"metadata": {"name": "tj", "namespace": "team-a"}, "spec": {}, "status": {}})
    cluster.api.apply(PYTORCH, v1_job("PyTorchJob", "team-a", "stays", "pending"))
    async with training(cluster, store, registry):
        await until(lambda: jobs_in(store) == {"tj", "stays"}, what="first sync")
        trainjobs = next(r for r in registry.sources[0].resources if r.resource == "trainjobs.trainer.kubeflow.org")
        cluster.api.uninstall(TRAINJOB)
        cluster.api.close_watches()
        await until(lambda: not trainjobs.installed, what="CRD gone")
        assert jobs_in(store) == {"stays"} and registry.ready and registry.sources[0].up
        cluster.api.install(TRAINJOB)
        await until(lambda: jobs_in(store) == {"tj", "stays"}, what="CRD back")
