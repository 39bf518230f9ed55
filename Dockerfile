# syntax=docker/dockerfile:1
# One image for the service, migrations, token cleanup and the kopf operator (different commands):
#   authsvc serve | authsvc migrate | authsvc cleanup [--loop] | kopf run /app/operator/handlers.py
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# ---- build: a virtualenv with the project and its dependencies (all ship wheels: no compiler needed)
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
# Dependencies first, from pyproject.toml alone with a stub package, so a source change reuses this layer.
COPY pyproject.toml README.md* ./
RUN mkdir service && touch service/__init__.py \
    && pip install --no-compile -e ".[operator]" \
    && rm -rf service
# The source tree stays at /app: the install is editable, so `authsvc migrate` finds alembic/ and
# alembic.ini next to the service package.
COPY . /app
RUN pip install --no-deps --no-compile -e ".[operator]" \
    && python -m compileall -q /app/service

# ---- runtime: the same base, the virtualenv and the source, a non-root user, nothing else
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 authsvc \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin authsvc
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AUTH_DATA_DIR=/tmp/authsvc
WORKDIR /app
# numeric, so Kubernetes' runAsNonRoot can verify it
USER 10001:10001
EXPOSE 8000
# No HEALTHCHECK: Kubernetes probes /health/startup, /health/readiness and /health/liveness.
ENTRYPOINT ["authsvc"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
