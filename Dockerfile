# syntax=docker/dockerfile:1
# The shim served by gunicorn, as a non-root user.
#
#   docker build -t redmart-shim .
#   docker run -p 8080:8080 -v ./shim.toml:/etc/shim/shim.toml:ro \
#     -e SHIM_CONFIG=/etc/shim/shim.toml -e SHIM_APP_SECRET -e SHIM_MAIN_ACCESS_TOKEN redmart-shim
#
# Secrets come from the environment or mounted files at run time, never from the image.
# Stop with a grace period above gunicorn's graceful_timeout (52 s by default, see
# shim/gunicorn_conf.py), e.g. `docker stop -t 60`, so in-flight requests finish.
# docker/install.sh and docker/start.sh are the install and start steps; tests/test_docker.py
# runs them outside Docker.

# The dependency list alone: the next stage's dependency layer is rebuilt only when it changes,
# not on every edit to pyproject.toml.
FROM python:3.11-slim AS requirements
WORKDIR /src
COPY --chmod=0755 docker/install.sh docker/
COPY pyproject.toml ./
RUN docker/install.sh requirements pyproject.toml > requirements.txt

FROM python:3.11-slim AS build
WORKDIR /src
ENV SHIM_VENV=/opt/shim PIP_ROOT_USER_ACTION=ignore
COPY --chmod=0755 docker/install.sh docker/
COPY --from=requirements /src/requirements.txt ./
RUN --mount=type=cache,target=/root/.cache/pip docker/install.sh deps requirements.txt
COPY pyproject.toml README.md ./
COPY shim ./shim
RUN --mount=type=cache,target=/root/.cache/pip docker/install.sh app /src

FROM python:3.11-slim AS runtime
# A fixed uid without a login shell or home; it owns nothing but the SQLite directory.
RUN groupadd --system --gid 10001 shim \
    && useradd --system --uid 10001 --gid shim --no-create-home --shell /usr/sbin/nologin shim \
    && install --directory --owner=10001 --group=10001 --mode=0750 /var/lib/shim
COPY --from=build /opt/shim /opt/shim
WORKDIR /app
COPY --chmod=0755 docker/start.sh docker/healthcheck.py ./
ENV PATH=/opt/shim/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PORT=8080
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/opt/shim/bin/python", "/app/healthcheck.py"]
ENTRYPOINT ["/app/start.sh"]
