"""`python -m exporter.pack`: check or generate the monitoring pack.

check                       promtool check/test rules, dashboard check, generated files fresh
generate                    rewrite docs/metrics.md and the PrometheusRule object
dashboards --api-version V  print every dashboard as a PersesDashboard of V (v1alpha1|v1alpha2)
promtool check-rules|test-rules|check-metrics [FILE...]
"""

from __future__ import annotations

import sys

import yaml

from exporter.pack import DASHBOARDS_DIR, RULES_DIR, generate, perses, promtool

ALLOWED_RAW_SERIES: set[str] = set()  # dashboards read recorded series only


def check() -> int:
    failures = 0
    for result in (
        promtool.check_rules(generate.rule_files()),
        promtool.test_rules(sorted((RULES_DIR / "tests").glob("*_test.yaml"))),
    ):
        print(result)
        failures += not result.ok
    recorded = perses.recorded_series(generate.rule_files())
    for path, obj in perses.load_all(DASHBOARDS_DIR).items():
        errors = perses.text_errors(path.read_text()) + perses.check(obj, recorded, ALLOWED_RAW_SERIES)
        print(f"dashboard {path.name}: {'ok' if not errors else 'FAILED'}")
        for error in errors:
            print(f"  {error}")
        failures += bool(errors)
    for path in generate.stale():
        print(f"{path}: stale; run `make generate`")
        failures += 1
    return 1 if failures else 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "check":
        return check()
    if command == "generate":
        for path in generate.write():
            print(f"wrote {path}")
        return 0
    if command == "dashboards" and len(rest) == 2 and rest[0] == "--api-version":
        version = rest[1] if rest[1].startswith("perses.dev/") else f"perses.dev/{rest[1]}"
        docs = [perses.to_api_version(obj, version) for obj in perses.load_all(DASHBOARDS_DIR).values()]
        print(yaml.safe_dump_all(docs, sort_keys=False), end="")
        return 0
    if command == "promtool" and rest:
        sub, files = rest[0], rest[1:]
        if sub == "check-rules":
            result = promtool.check_rules(files or generate.rule_files())  # type: ignore[arg-type]
        elif sub == "test-rules":
            result = promtool.test_rules(files or sorted((RULES_DIR / "tests").glob("*_test.yaml")))  # type: ignore[arg-type]
        elif sub == "check-metrics":
            result = promtool.check_metrics(sys.stdin.read())
        else:
            print(f"unknown promtool command {sub!r}", file=sys.stderr)
            return 2
        print(result)
        return 0 if result.ok else 1
    print(f"unknown command {' '.join(argv)!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
