# CPU worker image: the repository, its pinned dependencies, the embedded CPU models and llama-server
# (built for portable CPU variants, so the image runs on any x86-64 host, not only the build host).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends build-essential curl git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY embedfactory embedfactory
COPY flows flows
COPY tasks tasks
COPY deployments deployments
COPY infra infra
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir -c constraints.txt ".[s3,train,embedded]" \
    && python -m embedfactory prepare-models \
    && python -m embedfactory build-server
ENV EMBEDFACTORY_HOME=/app PREFECT_SERVER_ANALYTICS_ENABLED=false
CMD ["prefect", "worker", "start", "--pool", "cpu", "--type", "process"]
