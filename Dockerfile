# syntax=docker/dockerfile:1
# Build: docker build -t redmart-shim .   Run: docker run -e SHIM_CONFIG=/etc/shim/shim.toml ...
FROM python:3.11-slim AS build
WORKDIR /src
# Dependencies first, so source edits do not invalidate the dependency layer.
COPY pyproject.toml README.md ./
RUN python -m venv /opt/shim && /opt/shim/bin/pip install --no-cache-dir \
      "flask>=3.1" "werkzeug>=3.1" "marshmallow>=4.0" "requests>=2.32" "limits>=4.0" "gunicorn>=23"
COPY shim ./shim
RUN /opt/shim/bin/pip install --no-cache-dir --no-deps .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home shim
COPY --from=build /opt/shim /opt/shim
ENV PATH=/opt/shim/bin:$PATH PYTHONUNBUFFERED=1
USER shim
EXPOSE 8080
CMD ["gunicorn", "--bind", "0.0.0.0:8080", "--workers", "2", "--threads", "16", "shim:create_app()"]
