# GPU image for training and evaluation. The CUDA runtime comes with the torch wheel (nvidia-* packages),
# so a slim Python base is enough; run with `--gpus all` and the NVIDIA container toolkit, which also
# mounts the driver's EGL library for hardware MuJoCo rendering (the "graphics" capability below).
# It installs exactly as the README does: `make install` (pip install -e ".[dev]" into .venv).
#   docker build -t vla-train .
#   docker run --gpus all -v $PWD/outputs:/workspace/vla-train/outputs vla-train \
#       python train.py experiment=vla_adapter env=libero_object
FROM python:3.11-slim-bookworm

ENV DEBIAN_FRONTEND=noninteractive \
    MUJOCO_GL=egl \
    PYOPENGL_PLATFORM=egl \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics \
    PIP_NO_CACHE_DIR=1

RUN apt-get update && apt-get install -y --no-install-recommends \
        make git ffmpeg libegl1 libgl1 libgles2 libglib2.0-0 libosmesa6 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /workspace/vla-train
COPY . .
RUN make install PYTHON=python3.11
ENV PATH=/workspace/vla-train/.venv/bin:$PATH

# LIBERO's scene assets, fetched at build time (LIBERO would otherwise download them at run time).
ARG LIBERO_ASSETS_REPO=lerobot/libero-assets
RUN hf download ${LIBERO_ASSETS_REPO} --repo-type dataset --local-dir /opt/libero-assets --quiet \
    && rm -rf /root/.cache/huggingface
ENV LIBERO_ASSETS=/opt/libero-assets

CMD ["make", "test"]
