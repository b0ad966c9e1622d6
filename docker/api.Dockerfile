# syntax=docker/dockerfile:1.7
# API image: Fastify server run from TypeScript sources through tsx (a runtime dependency),
# the same way `bin/cotune.js`, the tests and the dev scripts run it, so there is one code path.
ARG NODE_IMAGE=node:20.20.2-bookworm-slim

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
# npm 11 is the project's npm; its install-script policy is what package-lock.json was made with.
RUN npm install -g npm@11.19.1 && npm --version
COPY package.json package-lock.json ./
# The API needs no install script: tfjs-node-gpu stays inert (no native binding) and the
# pure-JS fallbacks of msgpackr / esbuild's prebuilt platform package cover the rest.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    COTUNE_DATA_DIR=/data
WORKDIR /app
COPY --from=deps --chown=root:root /app/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY bin ./bin
COPY src ./src
# The data volume is mounted here; a fresh named volume takes this ownership.
RUN mkdir -p /data && chown node:node /data
# The official node image ships an unprivileged `node` user (uid 1000).
USER node
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/v1/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
CMD ["node", "--import", "tsx", "src/api/server.ts"]
