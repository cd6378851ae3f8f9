# connector in a container: the daemon (`connector run`) as a non-root user.
#
#   docker build -t connector .
#   docker run -d --name connector \
#     -v /srv/connector/etc:/etc/connector:ro \
#     -v connector-state:/var/lib/connector \
#     -e ACME_PASSWORD -p 127.0.0.1:9464:9464 connector
#   docker run --rm -v /srv/connector/etc:/etc/connector:ro -v connector-state:/var/lib/connector \
#     connector dump files                       # any other command the same way
#
# The config is /etc/connector/connector.toml. Its relative paths land in the state volume
# (the default store is /var/lib/connector/var/connector.db). For the health check and for
# scraping, it must serve metrics on all the container's interfaces:
#   [metrics]
#   listen = "0.0.0.0:9464"
# A new named volume takes the image's ownership; a bind-mounted state folder must be
# writable by uid 10001. Passwords: password_env (docker run -e) or a password_file
# mounted with mode 600 and owned by uid 10001 (e.g. a Docker/Compose secret).

# The base image by digest (the multi-arch index, so one pin serves amd64 and arm64): a
# rebuild gets the same Python and Debian packages. To take a newer one (a security fix),
# read the tag's current index digest, put it here, and rebuild and test:
#   docker buildx imagetools inspect python:3.11-slim-bookworm     (the "Digest:" line)
#   or: docker pull python:3.11-slim-bookworm &&
#       docker inspect --format '{{index .RepoDigests 0}}' python:3.11-slim-bookworm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:528257d48c1da0dcecc2e725d1ae34498d60c965f1241e39cd6a85a8859bdf84

# Build stage: the project and its dependencies into a virtualenv (binary wheels: no
# compiler needed); the final image copies only the venv. Dependencies come from the
# locks alone (`make lock`), each file checked against its hash: setuptools first, which
# then builds the project in place, so nothing unpinned is fetched. The locks change less
# often than the code: their layer stays cached. The embedded test servers (the
# `testing` extra) are not the daemon's and stay out.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/connector
WORKDIR /src
COPY requirements-build.lock requirements.lock ./
RUN /opt/connector/bin/pip install --no-cache-dir --require-hashes --no-deps \
        -r requirements-build.lock \
    && /opt/connector/bin/pip install --no-cache-dir --require-hashes --no-deps \
        --no-build-isolation -r requirements.lock
COPY pyproject.toml README.md ./
COPY connector ./connector
RUN /opt/connector/bin/pip install --no-cache-dir --no-deps --no-build-isolation . \
    && /opt/connector/bin/pip check

FROM ${PYTHON_IMAGE}
# A fixed uid, so that bind-mounted folders can be given to it.
RUN useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /var/lib/connector --shell /usr/sbin/nologin connector \
    && install -d -o connector -g connector -m 0700 /var/lib/connector \
    && install -d -m 0755 /etc/connector
COPY --from=build /opt/connector /opt/connector
# PYTHONDONTWRITEBYTECODE: the venv is compiled at install and read-only to the user.
ENV PATH=/opt/connector/bin:$PATH \
    CONNECTOR_CONFIG=/etc/connector/connector.toml \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /var/lib/connector
# Numeric, so that a runtime (Kubernetes runAsNonRoot) can tell it is not root.
USER 10001:10001
VOLUME ["/etc/connector", "/var/lib/connector"]
EXPOSE 9464
# No curl in slim images: the venv's Python asks /healthz (503 or no answer: unhealthy),
# directly even when an HTTP(S)_PROXY is set for the container.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:9464/healthz', timeout=4)"]
# `connector run` stops cleanly on SIGTERM, within seconds: it commits the file in hand up
# to its last batch (raise docker stop -t / stop_grace_period, 10 s, for slow servers).
# `run` and `once` both stop cleanly on SIGTERM (they handle it, so PID 1 is fine).
STOPSIGNAL SIGTERM
ENTRYPOINT ["connector"]
CMD ["run"]
