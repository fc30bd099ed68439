# The shim served by nginx in front of gunicorn (redmart-shim serve), as a non-root user.
#
#   scripts/build-image                  # any machine with an engine, registry or not
#   docker build -t redmart-shim .       # where the registry and the package index answer
#   docker run -p 8080:8080 -v ./shim.toml:/etc/shim/shim.toml:ro \
#     -e SHIM_CONFIG=/etc/shim/shim.toml -e SHIM_APP_SECRET -e SHIM_MAIN_ACCESS_TOKEN redmart-shim
#
# Secrets come from the environment or mounted files at run time, never from the image.
# Stop with a grace period above gunicorn's graceful_timeout (52 s by default, see
# shim/gunicorn_conf.py), e.g. `docker stop -t 60`, so in-flight requests finish: serve
# lets nginx drain, then stops gunicorn.
# Only what the classic builder understands (no syntax directive, no RUN --mount, no
# COPY --chmod), so an engine without BuildKit builds it too.

# The public image, pinned; scripts/build-image passes a base made from Debian's packages
# (scripts/build-base) when no registry answers. Every stage uses the same base: the venv's
# interpreter is a symlink into it.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

FROM ${BASE_IMAGE} AS build
WORKDIR /src
ENV SHIM_VENV=/opt/shim PIP_ROOT_USER_ACTION=ignore PIP_NO_CACHE_DIR=1
# The dependency layer's inputs are the script, the lock and the wheels, never the source: it
# is rebuilt only when the lock changes. docker/wheels/ holds the lock's wheels built on the
# host (scripts/build-image) or nothing, and then pip asks the package index.
COPY docker/install.sh docker/
COPY requirements.lock ./
COPY docker/wheels/ docker/wheels/
RUN docker/install.sh deps requirements.lock
COPY pyproject.toml README.md ./
COPY shim ./shim
RUN docker/install.sh app /src

FROM ${BASE_IMAGE} AS runtime
# nginx faces clients in front of gunicorn (shim/front.py): Debian's nginx-light, already in a
# base scripts/build-base made, installed here on the public one. Not pinned to a version:
# bookworm is fixed by the base, and its security updates replace the old version.
# A fixed uid without a login shell or home; it owns nothing but the SQLite directory.
# hadolint ignore=DL3008
RUN { command -v nginx >/dev/null || { apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
           nginx-light \
        && rm -rf /var/lib/apt/lists/*; }; } \
    && groupadd --system --gid 10001 shim \
    && useradd --system --uid 10001 --gid shim --no-create-home --shell /usr/sbin/nologin shim \
    && install --directory --owner=10001 --group=10001 --mode=0750 /var/lib/shim
COPY --from=build /opt/shim /opt/shim
WORKDIR /app
COPY docker/start.sh docker/healthcheck.py ./
ENV PATH=/opt/shim/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/opt/shim/bin/python", "/app/healthcheck.py"]
ENTRYPOINT ["/app/start.sh"]
