# GPU worker image: vLLM's own image (CUDA, PyTorch, vLLM) plus farm's worker side.
# Pin the vLLM version your sweeps name; results record the version they ran.
ARG VLLM_IMAGE=vllm/vllm-openai:v0.11.0
FROM ${VLLM_IMAGE}
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 CUDA_DEVICE_ORDER=PCI_BUS_ID
WORKDIR /opt/farm
COPY pyproject.toml README.md ./
COPY farm_contract ./farm_contract
# farm/ only for the `farmctl worker` entry point (click); its store and reports
# are never imported here, and the worker extra brings no SQL driver for them.
COPY farm ./farm
COPY workers ./workers
COPY tasks ./tasks
RUN pip install '.[worker,codecarbon,engines]' && useradd --system --uid 10001 --create-home farm \
    && mkdir -p /var/lib/farm/spool && chown farm /var/lib/farm/spool
USER farm
ENTRYPOINT []
CMD ["farmctl", "worker"]
