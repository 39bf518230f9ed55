# syntax=docker/dockerfile:1
# One image for the service, migrations, token cleanup and the kopf operator (different commands):
#   authsvc serve | authsvc migrate | authsvc cleanup [--loop] | kopf run -m authsvc_operator.handlers
# The image holds the project's wheel installed in a virtualenv, as `pip install authsvc[operator]` would: no
# source tree, no editable install.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# ---- build: the wheel, and a virtualenv with it and its dependencies (all ship wheels: no compiler needed)
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, read from pyproject.toml alone, so a source change reuses this layer.
COPY pyproject.toml ./
RUN python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
print("\n".join(p["dependencies"] + p["optional-dependencies"]["operator"]))' > /tmp/requirements.txt \
    && pip install --no-compile -r /tmp/requirements.txt
COPY . /src
RUN pip wheel --no-deps --wheel-dir /tmp/dist . \
    && pip install --no-deps --no-compile /tmp/dist/authsvc-*.whl \
    && pip check \
    && python -m compileall -q /opt/venv/lib

# ---- runtime: the same base, the virtualenv, a non-root user, nothing else
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 authsvc \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin authsvc
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AUTH_DATA_DIR=/tmp/authsvc
WORKDIR /tmp
# numeric, so Kubernetes' runAsNonRoot can verify it
USER 10001:10001
EXPOSE 8000
# No HEALTHCHECK: Kubernetes probes /health/startup, /health/readiness and /health/liveness.
ENTRYPOINT ["authsvc"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
