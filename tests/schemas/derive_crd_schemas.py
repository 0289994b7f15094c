"""Derive the JSON schemas in this directory from upstream CRDs (run by hand when upgrading).

    python tests/schemas/derive_crd_schemas.py CRD.yaml [CRD.yaml ...]

For each served version of each CRD it writes `<group>_<kind>_<version>.json`: the version's
openAPIV3Schema without descriptions, with `additionalProperties: false` on every object that lists
its properties and does not preserve unknown fields, so unknown keys fail the way
`kubectl apply --validate=strict` fails them. Sources: prometheus-operator v0.93.0
(example/prometheus-operator-crd/) and perses-operator (config/crd/bases/), see README.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


def strict(node: Any) -> Any:
    if isinstance(node, dict):
        # A "description" string annotates the schema; a "description" mapping is a property of that name.
        out = {k: strict(v) for k, v in node.items() if not (k == "description" and isinstance(v, str))}
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [strict(v) for v in node]
    return node


def main(paths: list[str]) -> None:
    here = Path(__file__).parent
    for path in paths:
        crd = yaml.safe_load(Path(path).read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served", True):
                continue
            schema = strict(version["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = {"type": "object"}
            target = here / f"{group}_{kind}_{version['name']}.json"
            target.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
            print(f"wrote {target.name}")


if __name__ == "__main__":
    main(sys.argv[1:])
