# GPU worker image: vLLM and the factory at one pinned set (infra/gpu-constraints.txt, resolved
# together by infra/lock_gpu.py and checked by tests/test_gpu_image.py). CUDA comes with torch's
# wheels; the host's NVIDIA driver with the container runtime. `with-vllm.sh` serves VLLM_MODEL on
# 127.0.0.1:8000 beside whatever command runs (a Prefect worker in compose, one flow run on Kubernetes).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY embedfactory embedfactory
COPY flows flows
COPY tasks tasks
COPY deployments deployments
COPY infra infra
# vLLM brings its own torch (2.8, CUDA); the factory goes in without its CPU pins (--no-deps)
RUN pip install --no-cache-dir -c infra/gpu-constraints.txt -r infra/gpu-requirements.txt \
    && pip install --no-cache-dir --no-deps .
ENV EMBEDFACTORY_HOME=/app PREFECT_SERVER_ANALYTICS_ENABLED=false VLLM_PORT=8000
ENTRYPOINT ["/app/infra/with-vllm.sh"]
CMD ["prefect", "worker", "start", "--pool", "gpu", "--type", "process", "--limit", "1"]
