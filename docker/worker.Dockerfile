# syntax=docker/dockerfile:1.7
# Training worker image, two targets:
#   gpu (default): CUDA 11.2 + cuDNN 8.1 runtime, the versions libtensorflow 2.9.1 inside
#                  @tensorflow/tfjs-node-gpu 4.22 was built against; needs the NVIDIA
#                  container toolkit on the host.
#   cpu:           plain Node image; the worker falls back to the WASM / CPU backends.
#     docker build -f docker/worker.Dockerfile --target cpu -t cotune-worker:cpu .
# Sources run through tsx (a runtime dependency), as in development and the tests.
ARG NODE_IMAGE=node:20.20.2-bookworm-slim
ARG CUDA_IMAGE=nvidia/cuda:11.2.2-cudnn8-runtime-ubuntu20.04

FROM ${NODE_IMAGE} AS node

# ---- CPU dependencies: no install scripts needed (no native TensorFlow binding) ----
FROM node AS deps-cpu
WORKDIR /app
RUN npm install -g npm@11.19.1 && npm --version
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

# ---- GPU base: the CUDA runtime with Node copied in from the official image ----
FROM ${CUDA_IMAGE} AS gpu-base
# Node's official linux-x64 build needs glibc >= 2.28; Ubuntu 20.04 has 2.31.
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules /usr/local/lib/node_modules
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && node --version

# ---- GPU dependencies: tfjs-node-gpu's install script fetches libtensorflow 2.9.1 (GPU)
#      and its prebuilt N-API binding; it is the one install script we approve ----
FROM gpu-base AS deps-gpu
WORKDIR /app
RUN npm install -g npm@11.19.1 && npm --version
COPY package.json package-lock.json ./
# npm 11 runs a dependency's install script only when approved: package.json's allowScripts
# approves @tensorflow/tfjs-node-gpu (and denies the rest); strict mode turns an unapproved
# script into an error instead of a notice. Everything is installed without scripts first,
# then only the approved package is rebuilt.
RUN printf '%s\n' 'strict-allow-scripts=true' > .npmrc \
 && npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm rebuild @tensorflow/tfjs-node-gpu --foreground-scripts \
 && ls node_modules/@tensorflow/tfjs-node-gpu/lib/napi-v*/tfjs_binding.node \
 && ls node_modules/@tensorflow/tfjs-node-gpu/deps/lib/libtensorflow.so.2 \
 && rm .npmrc && npm cache clean --force

# ---- CPU runtime ----
FROM node AS cpu
ENV NODE_ENV=production \
    COTUNE_DATA_DIR=/data
WORKDIR /app
COPY --from=deps-cpu /app/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY bin ./bin
COPY src ./src
COPY workers ./workers
RUN mkdir -p /data && chown node:node /data
# The official node image ships an unprivileged `node` user (uid 1000).
USER node
CMD ["node", "--import", "tsx", "workers/training.worker.ts"]

# ---- GPU runtime (default target) ----
FROM gpu-base AS gpu
ENV NODE_ENV=production \
    COTUNE_DATA_DIR=/data \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# Same uid as the node image's `node` user, so api and worker share the data volume.
RUN groupadd --gid 1000 cotune && useradd --uid 1000 --gid cotune --create-home --shell /usr/sbin/nologin cotune
WORKDIR /app
COPY --from=deps-gpu /app/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY bin ./bin
COPY src ./src
COPY workers ./workers
RUN mkdir -p /data && chown cotune:cotune /data
USER cotune
CMD ["node", "--import", "tsx", "workers/training.worker.ts"]
