# GPU image for training and evaluation. The CUDA runtime comes with the torch wheel (nvidia-* packages),
# so a slim Python base is enough; run with `--gpus all` and the NVIDIA container toolkit.
# It installs exactly as the README does: `make install` (pip install -e ".[dev]" into .venv).
FROM python:3.11-slim-bookworm

ENV DEBIAN_FRONTEND=noninteractive \
    MUJOCO_GL=egl \
    PYOPENGL_PLATFORM=egl \
    PIP_NO_CACHE_DIR=1

RUN apt-get update && apt-get install -y --no-install-recommends \
        make git ffmpeg libegl1 libgl1 libgles2 libglib2.0-0 libosmesa6 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /workspace/vla-train
COPY . .
RUN make install PYTHON=python3.11
ENV PATH=/workspace/vla-train/.venv/bin:$PATH

CMD ["make", "test"]
