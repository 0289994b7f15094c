"""A Kubernetes API emulator over real HTTP, for the demo and the tests.

It speaks the list/watch protocol the exporter relies on (pagination with
continue tokens, resourceVersion, chunked watch streams with BOOKMARK and
ERROR 410, label selectors), serves core kinds and CRDs (a kind that is not
installed answers 404 like a missing CRD), accepts create/replace/merge-patch/
delete, and injects faults (dropped connections, 410, 429, 500, slow answers).
"""
