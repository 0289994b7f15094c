"""What the dashboards cost on a real Prometheus holding 24 h of data, recorded against raw.

1. Harvest one scrape of every target of the local stack (the emulator with `--scale`, the cluster
   role, the node role on every simulated GPU node, the simulated kubelet, kube-state-metrics,
   node-exporter, dcgm-exporter and model servers), labelled as Prometheus would label them.
2. Write 24 h of those series at a 5 min resolution: gauges as they are, counters growing steadily.
   Turn them into TSDB blocks with `promtool tsdb create-blocks-from openmetrics`.
3. Evaluate the recording rules over the 24 h with `promtool tsdb create-blocks-from rules`, one
   dependency level at a time: a rule that reads recorded series needs them in the TSDB first.
   Rate windows shorter than 15 min become 15 min, so a 5 min resolution fills them.
4. Time every query of every dashboard at 1 h, 24 h and 7 d ranges, as Perses asks for it: a Table
   panel sends an instant query at the range's end, a chart a range query (here of about 200 steps;
   Perses derives the step from the panel's width), and panels asking the same thing share one
   request. Time it again with every recorded series inlined back into the raw expression it
   records, which is what the panel would cost without the rules, and compare samples read.
   Queries over per-object recorded series (one per job, notebook, run, model) are reported apart:
   their raw side reads only that object's few raw series, so their ratio is that fan-in.

    python -m benchmarks.bench_dashboards [--scale 5] [--keep DIR] [--verbose]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.results import Figure
from exporter.exposition import escape_label_value, format_value
from exporter.pack import DASHBOARDS_DIR, generate, local, perses

STEP = 300  # seconds between samples
DAY = 86400
WINDOW = "15m"  # the shortest rate window, so that a 5 min resolution always has samples in it
RANGES = {"1h": 3600, "24h": DAY, "7d": 7 * DAY}
COUNTER_SUFFIXES = ("_total", "_count", "_sum", "_bucket")
Series = tuple[str, tuple[tuple[str, str], ...], float, bool]  # name, labels, value, is a counter


def harvest(tmp: Path, scale: int) -> list[Series]:
    """One scrape of every target, with the labels Prometheus's scrape configs would give them."""
    out: list[Series] = []
    with contextlib.ExitStack() as stack:
        url, kubeconfig, _ = stack.enter_context(local.emulator(tmp, "--scale", str(scale)))
        exporter = stack.enter_context(local.exporter(tmp, kubeconfig))
        agents = stack.enter_context(local.gpu_agents(tmp))
        time.sleep(3)  # the agents' first polls and the PodResources answers
        for job in local.scrape_configs(exporter, url, agents):
            for config in job["static_configs"]:
                for target in config["targets"]:
                    status, body = local.http_get(f"http://{target}{job['metrics_path']}")
                    assert status == 200, (job["job_name"], status)
                    out += _label(body.decode(), job, target, config.get("labels", {}))
                    # The series Prometheus adds for every target it scrapes.
                    target_labels = {"job": job["job_name"], "instance": target, **config.get("labels", {})}
                    out.append(("up", tuple(sorted(target_labels.items())), 1.0, False))
    return out


def _label(text: str, job: dict[str, Any], target: str, target_labels: dict[str, str]) -> list[Series]:
    extra = {"job": job["job_name"], "instance": target, **target_labels}
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = dict(sample.labels)
            for key, value in extra.items():
                if key in labels:
                    if job["honor_labels"]:
                        continue  # the scraped label wins
                    labels[f"exported_{key}"] = labels.pop(key)  # as Prometheus renames a conflict
                labels[key] = value
            counter = family.type in ("counter", "histogram", "summary") or sample.name.endswith(COUNTER_SUFFIXES)
            out.append((sample.name, tuple(sorted(labels.items())), float(sample.value), counter))
    return out


def write_openmetrics(series: list[Series], path: Path, start: int, end: int) -> int:
    samples = 0
    by_name: dict[str, list[Series]] = {}
    for s in series:
        by_name.setdefault(s[0], []).append(s)
    with path.open("w") as out:
        for name, rows in by_name.items():
            for _, labels, value, counter in rows:
                selector = name + "{" + ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels) + "}"
                if not math.isfinite(value):
                    continue
                for t in range(start, end + 1, STEP):
                    v = value * (t - start + STEP) / (end - start + STEP) if counter else value
                    out.write(f"{selector} {format_value(v)} {t}\n")
                    samples += 1
        out.write("# EOF\n")
    return samples


def rule_levels() -> list[list[dict[str, str]]]:
    """Every recording rule, windows widened to 15 min, grouped by how many recorded series deep it reads."""
    rules = {rule["record"]: re.sub(r"\[(\d+)([sm])\]", _widen, rule["expr"])
             for group in generate.rule_groups() for rule in group["rules"]}  # fmt: skip
    level: dict[str, int] = {}

    def depth(record: str, seen: tuple[str, ...] = ()) -> int:
        if record not in level:
            inputs = [n for n in perses.series_in(rules[record]) if n in rules and n not in seen]
            level[record] = 1 + max((depth(n, (*seen, record)) for n in inputs), default=-1)
        return level[record]

    for record in rules:
        depth(record)
    out: list[list[dict[str, str]]] = [[] for _ in range(max(level.values()) + 1)]
    for record, expr in rules.items():
        out[level[record]].append({"record": record, "expr": expr})
    return out


def _widen(match: re.Match[str]) -> str:
    seconds = int(match.group(1)) * (60 if match.group(2) == "m" else 1)
    return f"[{WINDOW}]" if seconds < 900 else match.group(0)


def inline(query: str, rules: dict[str, str]) -> str:
    """The query with every recorded series replaced by the raw expression it records (recursively).
    Label matchers on a recorded series are dropped: with the dashboards' defaults they match all."""
    pattern = re.compile(r"(?<![\w:])(" + "|".join(map(re.escape, sorted(rules, key=len, reverse=True)))
                         + r")(\{[^}]*\})?(\[[^\]]*\])?(?![\w:])")  # fmt: skip

    def expand(text: str, depth: int = 0) -> str:
        def one(m: re.Match[str]) -> str:
            body = "(" + expand(rules[m.group(1)], depth + 1) + ")"
            return f"{body}{m.group(3)[:-1]}:{STEP}s]" if m.group(3) else body

        return pattern.sub(one, text) if depth < 12 else text

    return expand(query)


@contextlib.contextmanager
def prometheus(data: Path, log: Path) -> Iterator[str]:
    port = local.free_port()
    args = ["prometheus", f"--storage.tsdb.path={data}", f"--web.listen-address=127.0.0.1:{port}",
            "--config.file=/dev/null", "--query.lookback-delta=6m", "--storage.tsdb.retention.time=30d",
            "--log.level=warn"]  # fmt: skip
    with local.process(args, log) as proc:
        local.wait_for(f"http://127.0.0.1:{port}/-/ready", timeout=120, proc=proc)
        yield f"http://127.0.0.1:{port}"


def promtool(*args: str) -> None:
    result = subprocess.run(["promtool", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"promtool {' '.join(args[:3])}: {result.stderr[-2000:]}")


def move_blocks(source: Path, data: Path) -> int:
    moved = 0
    for block in source.iterdir():
        if (block / "meta.json").exists():
            shutil.move(str(block), data / block.name)
            moved += 1
    return moved


def timed(
    prom: str, query: str, end: int, seconds: int, instant: bool, repeat: int = 3
) -> tuple[float, int, int] | None:
    """(seconds Prometheus spent evaluating, samples it read, series answered): its own figures
    (stats=all), without the HTTP round trip. Samples read is the cost measure that noise cannot move.
    A range query has about 200 steps; an instant one (a Table panel) is evaluated at `end`."""
    if instant:
        path, params = "query", {"query": query, "time": end, "stats": "all"}
    else:
        path = "query_range"
        params = {"query": query, "start": end - seconds, "end": end, "stats": "all", "step": max(seconds // 200, 15)}
    url = f"{prom}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    times, samples = [], 0
    for _ in range(repeat):
        status, body = local.http_get(url, timeout=120)
        answer = json.loads(body)
        if status != 200 or answer.get("status") != "success":
            return None
        stats = answer["data"]["stats"]
        times.append(float(stats["timings"]["execTotalTime"]))
        samples = int(stats["samples"]["totalQueryableSamples"])
    return statistics.median(times), samples, len(answer["data"]["result"])


def run(scale: int = 5, keep: Path | None = None, verbose: bool = False) -> list[Figure]:
    """With `keep`, the TSDB is built there once and reused by later runs (to iterate on queries)."""
    if keep and (keep / "end").exists():
        return _query(keep, int((keep / "end").read_text()), [], verbose)
    tmp = keep or Path(tempfile.mkdtemp(prefix="bench-dashboards-"))
    try:
        return _run(tmp, scale, verbose)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def _run(tmp: Path, scale: int, verbose: bool) -> list[Figure]:
    tmp.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    series = harvest(tmp, scale)
    end = (int(time.time()) - 3600) // STEP * STEP  # an hour back: the TSDB head takes no older samples
    start = end - DAY
    data = tmp / "data"
    data.mkdir()
    samples = write_openmetrics(series, tmp / "raw.om", start, end)
    promtool("tsdb", "create-blocks-from", "openmetrics", "-q", str(tmp / "raw.om"), str(data))
    (tmp / "raw.om").unlink()
    levels = rule_levels()
    rules = {r["record"]: r["expr"] for level in levels for r in level}
    print(f"dashboards: {len(series):,} raw series, {samples:,} samples over 24 h; {len(rules)} rules in "
          f"{len(levels)} dependency levels", flush=True)  # fmt: skip
    for n, level in enumerate(levels):
        (tmp / f"level{n}.yaml").write_text(yaml.safe_dump({"groups": [{"name": f"level{n}", "interval": f"{STEP}s",
                                                                         "rules": level}]}))  # fmt: skip
        with prometheus(data, tmp / "prometheus.log") as prom:
            out = tmp / f"out{n}"
            promtool("tsdb", "create-blocks-from", "rules", "-q", f"--start={start}", f"--end={end}", f"--url={prom}",
                     f"--output-dir={out}", str(tmp / f"level{n}.yaml"))  # fmt: skip
        move_blocks(out, data)
    backfill = time.monotonic() - began
    figures = [Figure("raw series / samples loaded (24 h at 5 min)", f"{len(series):,} / {samples:,}", "10k+ series",
                      len(series) >= 10_000),
               Figure("harvest, blocks and rule backfill", f"{backfill:.0f} s", "", None)]  # fmt: skip
    (tmp / "end").write_text(str(end))
    return _query(tmp, end, figures, verbose)


def _query(tmp: Path, end: int, figures: list[Figure], verbose: bool) -> list[Figure]:
    rules = {r["record"]: r["expr"] for level in rule_levels() for r in level}
    with prometheus(tmp / "data", tmp / "prometheus.log") as prom:
        for path in sorted(DASHBOARDS_DIR.glob("*.yaml")):
            figures += _dashboard(prom, path, rules, end, verbose)
    return figures


NOTE = """\
How to read the samples-read ratios. A query over an aggregating recorded series (per cluster,
namespace or status) replaces a raw query that reads every series aggregated; that is where the
rules pay, and where §7's "each ≥ 10x" is measured. A query over per-object recorded series (one
per job, notebook, run, step, model version, node or component) replaces a raw query that reads
only that object's own few raw series: a job's state-set, its start and completion times, a
component's one readiness gauge. A recorded series cannot be read in fewer than one sample per step,
so the ratio there is the object's fan-in (1x to 3x for those inputs); it is reported, and cannot
reach 10x by recording. Range queries here use about 200 steps; Perses derives the step from the
panel's width (about 2 min at 24 h for a third-width panel), so a real load reads up to 3.6x the
samples of both kinds alike. "Not comparable" queries read series the harvest does not hold (a
metric no simulated target exposes, a histogram with no observations yet).
"""

# Labels that name one object. A recorded series whose level (the part of its name before the
# first colon) holds one of them keeps a series per object: per job, notebook, run, model, node.
OBJECT_KEYS = ("job_name", "notebook", "run_id", "model", "pod", "node", "component", "deployment", "dspa", "source")


def per_object(promql: str) -> bool:
    """Every recorded series the query reads is kept per object (its fan-in is that object's raw series)."""
    levels = [f"_{name.split(':')[0]}_" for name in perses.series_in(promql) if ":" in name]
    return bool(levels) and all(any(f"_{key}_" in level for key in OBJECT_KEYS) for level in levels)


def _dashboard(prom: str, path: Path, rules: dict[str, str], end: int, verbose: bool) -> list[Figure]:
    dashboard = yaml.safe_load(path.read_text())
    spec = perses.dashboard_spec(dashboard)
    values = {v["spec"]["name"]: ".*" for v in spec.get("variables", [])}
    title = spec["display"]["name"]
    # Perses sends one request for panels that ask the same thing (its query cache is keyed by the
    # query, the time range and the mode); this benchmark's step does not depend on panel width.
    asked = list(dict.fromkeys((q.promql, q.instant) for q in perses.queries(dashboard)))
    out = []
    for label, seconds in RANGES.items():
        values |= local.builtin_variables(seconds)
        recorded_total, raw_total = 0.0, 0.0
        ratios: dict[bool, list[float]] = {True: [], False: []}  # per object or not -> raw / recorded samples
        incomparable = []
        for promql, instant in asked:
            query = local.fill_variables(promql, values)
            recorded = timed(prom, query, end, seconds, instant)
            if recorded is None:
                raise RuntimeError(f"{title}: Prometheus rejected {query}")
            recorded_total += recorded[0]
            raw = timed(prom, inline(query, rules), end, seconds, instant, repeat=2)
            if raw is None or not recorded[2] or not raw[2] or not raw[1]:
                # An error, or the harvest holds nothing for it (a metric no target exposed, a counter
                # that never moved): there is nothing to compare.
                incomparable.append(promql)
                continue
            raw_total += raw[0]
            ratio = raw[1] / max(recorded[1], 1)  # samples read: the raw query's over the recorded one's
            one_per_object = per_object(promql)
            ratios[one_per_object].append(ratio)
            if verbose and label == "24h":
                print(f"    {'i' if instant else 'r'}{'o' if one_per_object else 'a'} {recorded[0] * 1e3:6.1f} ms "
                      f"{recorded[1]:>9,} samples | raw {raw[0] * 1e3:7.1f} ms {raw[1]:>10,} | {ratio:6.1f}x  "
                      f"{promql[:100]}")  # fmt: skip
        every = ratios[True] + ratios[False]
        print(f"  {title} at {label}: {len(asked)} queries, recorded {recorded_total * 1e3:.1f} ms, raw "
              f"{raw_total * 1e3:.1f} ms; samples read per query: median {statistics.median(every):.0f}x, lowest "
              f"{min(every):.1f}x" + (f"; not comparable: {len(incomparable)}" if incomparable else ""),
              flush=True)  # fmt: skip
        if verbose and label == "24h":
            for promql in incomparable:
                print(f"    not comparable: {promql[:120]}")
        out.append(Figure(f"{title}, {len(asked)} queries at {label}: recorded / raw, evaluation time",
                          f"{recorded_total * 1e3:.1f} ms / {raw_total * 1e3:.1f} ms "
                          f"({raw_total / max(recorded_total, 1e-9):.0f}x)",
                          "< 200 ms in all at 24 h" if label == "24h" else "",
                          recorded_total < 0.2 if label == "24h" else None))  # fmt: skip
        if label != "24h":
            continue  # samples read scale with the range alike for both: one range says it
        for kind, found in (("aggregating", ratios[False]), ("per-object", ratios[True])):
            if found:
                out.append(Figure(f"{title}, {len(found)} {kind} queries: samples read, raw / recorded",
                                  f"median {statistics.median(found):.0f}x, lowest {min(found):.1f}x",
                                  "each ≥ 10x", min(found) >= 10))  # fmt: skip
        if incomparable:
            out.append(Figure(f"{title}: queries the harvest has no raw data for", str(len(incomparable)), "", None))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=5, help="the emulator's --scale (more series)")
    parser.add_argument("--keep", type=Path, help="build the TSDB in this folder once and reuse it on later runs")
    parser.add_argument("--verbose", action="store_true", help="every query's figures at 24 h")
    args = parser.parse_args()
    for figure in run(args.scale, args.keep, args.verbose):
        print(figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
