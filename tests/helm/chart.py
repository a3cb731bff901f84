"""Rendering ``helm/tlsfleet`` offline and reading what it rendered.

helm itself is not installed on the project's machines: ``helm-template`` (built from
the shared tools, see its README) renders a chart the way ``helm template`` does,
values.schema.json included. Where it is found, in order: ``$TLSFLEET_HELM_TEMPLATE``,
``helm-template`` on PATH, then ``shared/bin/helm-template`` in the folder holding the
repository or any folder above it (where the shared tools live beside checkouts), then
``shared/bin/helm-template`` one or two folders below the file system's root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # no stubs

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "tlsfleet"
VALUES = Path(__file__).resolve().parent / "values"
RELEASE = "fleet"
NAMESPACE = "tlsfleet"
#: The Kubernetes version the rendered objects are validated against.
KUBE_VERSION = "1.30.0"

_HOW_TO_GET_IT = (
    "helm-template (an offline `helm template`) was not found: set TLSFLEET_HELM_TEMPLATE "
    "to its path, put it on PATH, or build it beside the repository with "
    "`shared/tools/helm-template/build.sh` (see shared/tools/helm-template/README.md; it "
    "needs Debian's golang-go and the Go packages listed there)"
)


def renderer() -> Path:
    """The helm-template binary; fails the test (never skips) when it is missing."""
    configured = os.environ.get("TLSFLEET_HELM_TEMPLATE")
    candidates = [Path(configured)] if configured else []
    on_path = shutil.which("helm-template")
    if on_path:
        candidates.append(Path(on_path))
    candidates += [folder / "shared" / "bin" / "helm-template" for folder in REPO.parents]
    # A checkout elsewhere (a CI clone in a temporary folder) on a machine that has the
    # shared tools one or two levels below the root.
    candidates += sorted(Path("/").glob("*/shared/bin/helm-template"))
    candidates += sorted(Path("/").glob("*/*/shared/bin/helm-template"))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(_HOW_TO_GET_IT, pytrace=False)


@dataclass(frozen=True)
class Rendered:
    """The documents a render produced (hooks included), with look-ups."""

    documents: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.documents if d["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
        return found[0]

    def names(self, kind: str) -> set[str]:
        return {d["metadata"]["name"] for d in self.of_kind(kind)}

    def pod_specs(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every pod template: (kind/name, pod spec)."""
        for doc in self.documents:
            if doc["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
                yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def run(
    *args: str, chart: Path = CHART, values: Sequence[Path] = ()
) -> subprocess.CompletedProcess[str]:
    """Run the renderer on ``chart`` with values files and extra arguments."""
    command = [str(renderer()), "--name", RELEASE, "-n", NAMESPACE]
    command += ["--kube-version", f"v{KUBE_VERSION}"]
    for path in values:
        command += ["-f", str(path)]
    return subprocess.run(
        [*command, *args, str(chart)], capture_output=True, text=True, timeout=60, check=False
    )


def render(*args: str, chart: Path = CHART, values: Sequence[Path] = ()) -> Rendered:
    """Render, failing the test with the renderer's error when it refuses."""
    result = run(*args, chart=chart, values=values)
    assert result.returncode == 0, result.stderr
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    return Rendered(documents)
