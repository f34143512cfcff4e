# The privileged helper of the Kubernetes worker pod (deploy/k8s/worker-daemonset.yaml):
# farm-gpu-tune (three NVML setters, each argument checked) behind its relay on a
# unix socket. The standard library and nvidia-ml-py only: nothing else of the farm.
#   docker build -f deploy/gpu-tune.Dockerfile -t farm-gpu-tune:latest .
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN pip install 'nvidia-ml-py>=12'
COPY workers/gpu/tune_helper.py /usr/local/sbin/farm-gpu-tune
COPY workers/gpu/tune_relay.py /usr/local/bin/farm-gpu-tune-relay
CMD ["python", "-I", "/usr/local/bin/farm-gpu-tune-relay", "serve", "/run/farm-tune/helper.sock", "--", "python", "-I", "/usr/local/sbin/farm-gpu-tune"]
