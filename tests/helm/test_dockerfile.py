"""The container image's invariants, read from the Dockerfile (no Docker daemon needed):
a builder stage that makes wheels from the pinned constraints, a final stage without
compilers that runs as a fixed non-root UID with ``tlsfleet`` as its entry point."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMPILERS = ("build-essential", "gcc", "g++", "clang", "make", "cc ", "-dev ")


@dataclass
class Stage:
    base: str
    name: str | None
    #: (instruction, arguments), continuation lines joined.
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]


def _stages(text: str) -> list[Stage]:
    joined = re.sub(r"\\\n", " ", text)
    stages: list[Stage] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif stages:
            stages[-1].instructions.append((instruction, args.strip()))
    return stages


def _dockerfile() -> list[Stage]:
    return _stages((REPO / "Dockerfile").read_text())


def test_a_builder_stage_makes_wheels_from_the_constraints() -> None:
    builder, *_ = _dockerfile()
    assert builder.name == "builder"
    wheel = [run for run in builder.all("RUN") if "pip wheel" in run]
    assert len(wheel) == 1
    assert "-c constraints.txt" in wheel[0]


def test_the_final_stage_has_no_compilers_and_installs_only_wheels() -> None:
    *_, final = _dockerfile()
    assert final.name is None
    assert final.base == _dockerfile()[0].base  # same slim Python base
    assert "slim" in (REPO / "Dockerfile").read_text().split("PYTHON_IMAGE=")[1].split()[0]
    for run in final.all("RUN"):
        assert "apt-get install" not in run
        assert not any(compiler in f"{run} " for compiler in COMPILERS), run
    installs = [run for run in final.all("RUN") if "pip install" in run]
    assert len(installs) == 1
    assert "--no-index" in installs[0]
    # Only the wheels come from the builder
    from_builder = [a for a in final.all("COPY") + final.all("RUN") if "builder" in a]
    assert all("/wheels" in a for a in from_builder)


def test_the_image_runs_as_a_fixed_non_root_user() -> None:
    *_, final = _dockerfile()
    users = final.all("USER")
    assert users, "the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "a numeric UID (Kubernetes' runAsNonRoot can check it)"
    assert int(uid) >= 10000
    chart_values = (REPO / "helm" / "tlsfleet" / "values.yaml").read_text()
    assert f"runAsUser: {uid}" in chart_values


def test_one_entry_point_for_every_role() -> None:
    *_, final = _dockerfile()
    (entrypoint,) = final.all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["tlsfleet"]
    env = " ".join(final.all("ENV"))
    # Writable places under /tmp only (an emptyDir when the root file system is read-only)
    assert "HOME=/tmp/" in env
    assert "TLSFLEET_DATA_DIR=/tmp/" in env


def test_no_registry_or_index_urls() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert "://" not in text
    assert "--index-url" not in text
    assert "--extra-index-url" not in text


def test_the_build_context_holds_what_the_build_copies() -> None:
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignored  # everything out, then what is needed back in
    allowed = {line[1:].rstrip("/") for line in ignored if line.startswith("!")}
    copied: set[str] = set()
    for stage in _dockerfile():
        for args in stage.all("COPY"):
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            copied.update(Path(source).parts[0] for source in words[:-1])
    assert copied <= allowed
    assert "migrations" in copied  # the migration job needs Alembic's scripts


def test_the_wheel_carries_every_data_file_the_packages_use() -> None:
    # The image installs a wheel: a template, a stylesheet or a policy file that the
    # package data patterns miss would exist in a checkout and not in the image.
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["*"]
    packages = config["tool"]["setuptools"]["packages"]["find"]["include"]
    missing = []
    for package in {p.rstrip("*") for p in packages}:
        for path in (REPO / package).rglob("*"):
            if not path.is_file() or path.suffix in {".py", ".pyc"}:
                continue
            if "__pycache__" in path.parts:
                continue
            if not any(path.match(pattern) for pattern in patterns):
                missing.append(str(path.relative_to(REPO)))
    assert missing == []
