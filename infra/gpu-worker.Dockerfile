# GPU worker image: vLLM's CUDA image plus the factory. `with-vllm.sh` serves VLLM_MODEL on
# 127.0.0.1:8000 beside whatever command runs (a Prefect worker in compose, one flow run on Kubernetes).
ARG VLLM_IMAGE=vllm/vllm-openai:v0.11.0
FROM ${VLLM_IMAGE}
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY embedfactory embedfactory
COPY flows flows
COPY tasks tasks
COPY deployments deployments
COPY infra infra
# torch, transformers and CUDA come with the vLLM image: keep them, add the factory and the rest
RUN pip install --no-cache-dir --no-deps . \
    && pip install --no-cache-dir prefect==3.8.8 "fastapi<0.151" sentence-transformers datasets pyarrow openai \
       jinja2 datasketch boto3 aiohttp trl peft accelerate prefect-kubernetes==0.8.0
ENV EMBEDFACTORY_HOME=/app PREFECT_SERVER_ANALYTICS_ENABLED=false VLLM_PORT=8000
ENTRYPOINT ["/app/infra/with-vllm.sh"]
CMD ["prefect", "worker", "start", "--pool", "gpu", "--type", "process", "--limit", "1"]
