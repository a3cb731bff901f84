# tlsfleet: one image for every role.
#
#   docker build -t tlsfleet .
#   docker run --rm tlsfleet --help
#   docker run --rm -e TLSFLEET_DATABASE_URL=… -e TLSFLEET_REDIS_URL=… tlsfleet migrate
#   … tlsfleet api --host 0.0.0.0 | worker [--no-cron] | scheduler
#
# The builder stage turns the project and every pinned dependency (constraints.txt)
# into wheels; the final stage installs only those wheels, with no compiler, as a
# non-root user with a fixed UID, and writes nothing outside /tmp (mount an emptyDir
# there when the root file system is read-only).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# Compilers only here, for any dependency without a wheel for this platform.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY scanner ./scanner
COPY policy ./policy
COPY fleet ./fleet
COPY api ./api
COPY worker ./worker
RUN pip wheel --no-cache-dir -c constraints.txt --wheel-dir /wheels ".[fast]"

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp/home \
    TMPDIR=/tmp \
    TLSFLEET_DATA_DIR=/tmp/tlsfleet
RUN groupadd --system --gid 10001 tlsfleet \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp/home --no-create-home \
       --shell /usr/sbin/nologin tlsfleet
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels "tlsfleet[fast]"
# Alembic's scripts are not in the wheel: fleet/db/migrate.py finds them next to the
# installed packages (``<site-packages>/migrations``).
COPY migrations /opt/tlsfleet-migrations
RUN cp -r /opt/tlsfleet-migrations \
        "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/migrations" \
    && rm -rf /opt/tlsfleet-migrations \
    && tlsfleet --help >/dev/null
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
ENTRYPOINT ["tlsfleet"]
CMD ["--help"]
