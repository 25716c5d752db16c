# pmc-gateway: a small image that runs `pmc-gateway serve` as a non-root user.
# Config and secrets are mounted, never baked in:
#   /etc/pmc-gateway/gateway.toml   the config (listen = "0.0.0.0:8080" inside a container)
#   secrets                         as environment variables or files under /run/secrets
#
#   docker build -t pmc-gateway:0.1.0 .       (the tag config/k8s/deployment.yaml names)
#   export PMC_LIVE_API_KEY=pmc_live_… PMC_TEST_API_KEY=pmc_test_… PMC_GATEWAY_ADMIN_TOKEN=<16+ chars> PMC_WEBHOOK_SECRET=…
#   docker run -p 8080:8080 -v $PWD/config/docker/gateway.toml:/etc/pmc-gateway/gateway.toml:ro \
#     -e PMC_LIVE_API_KEY -e PMC_TEST_API_KEY -e PMC_GATEWAY_ADMIN_TOKEN -e PMC_WEBHOOK_SECRET pmc-gateway:0.1.0
# (config/k8s/gateway.toml is the Kubernetes one: it needs the cluster's Redis, key files and Secrets.)

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY gateway ./gateway
RUN python -m venv /opt/pmc-gateway \
 && /opt/pmc-gateway/bin/pip install --upgrade pip \
 && /opt/pmc-gateway/bin/pip install -c constraints.txt .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin pmcgw \
 && mkdir -p /etc/pmc-gateway && chown pmcgw /etc/pmc-gateway
COPY --from=build /opt/pmc-gateway /opt/pmc-gateway
ENV PATH=/opt/pmc-gateway/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/_gateway/health', timeout=2).status == 200 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["pmc-gateway", "serve"]
CMD ["--config", "/etc/pmc-gateway/gateway.toml"]
