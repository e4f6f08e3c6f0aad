# syntax=docker/dockerfile:1
#
# Image of the rds-csi node plugin (deploy/node.yaml runs it).
#
#   docker build -t <registry>/rds-csi-node:$(version from pyproject.toml) .
#
# Built outside this repository's CI: the CI machine has no container engine, so nothing here
# is exercised by `make test` except tests/test_deploy.py's static checks of this file (base
# image, packages for every host tool the code runs, pinned requirements, entry point).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: the rds-csi wheel only (its dependencies come pinned from requirements.txt)
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rds_csi ./rds_csi
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- runtime
FROM ${PYTHON_IMAGE}

# The host tools the node service runs: nvme-cli (nvme connect/disconnect), e2fsprogs
# (mkfs.ext4, fsck.ext4, resize2fs), xfsprogs (mkfs.xfs, xfs_repair, xfs_growfs), util-linux
# (blkid), mount (mount, umount, losetup).
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        nvme-cli \
        e2fsprogs \
        xfsprogs \
        util-linux \
        mount \
    && rm -rf /var/lib/apt/lists/*

COPY deploy/image/requirements.txt /tmp/requirements.txt
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-deps -r /tmp/requirements.txt /tmp/wheels/*.whl \
    && pip check \
    && rm -rf /tmp/wheels /tmp/requirements.txt

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Root on purpose: the plugin mounts, formats and connects NVMe devices (the pod is privileged).
USER root
ENTRYPOINT ["rds-csi-node"]
