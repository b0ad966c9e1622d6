// Static checks of the deployment files: no Docker engine runs where the tests run, so this
// test reads docker-compose.yml and the Dockerfiles and holds them to what the code needs.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse, type Tags } from 'yaml';
import { EnvSchema } from '../../src/config.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8');

// Compose's `!reset` tag (used by the CPU override) is not core YAML.
const reset = () => ({ reset: true });
const composeTags: Tags = [
  { tag: '!reset', collection: 'map', resolve: reset },
  { tag: '!reset', collection: 'seq', resolve: reset },
  { tag: '!reset', resolve: reset },
];
const parseCompose = (path: string): Compose => parse(read(path), { merge: true, customTags: composeTags }) as Compose;

interface Service {
  image?: string;
  build?: { context?: string; dockerfile?: string; target?: string };
  command?: string[] | string;
  environment?: Record<string, string | number | null>;
  ports?: (string | { target: number; published?: string | number })[];
  volumes?: (string | { type?: string; source?: string; target: string })[];
  depends_on?: Record<string, { condition?: string }>;
  healthcheck?: { test?: string[] | string; disable?: boolean };
  deploy?: { resources?: { reservations?: { devices?: { driver?: string; count?: number | string; capabilities?: string[] }[] } } } | { reset: true };
  init?: boolean;
}
interface Compose {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
}

const compose = parseCompose('docker-compose.yml');
const services = compose.services;

/** Every variable the service reads: the config schema plus any direct process.env use in src/ and workers/. */
function envVariablesReadByCode(): Set<string> {
  const names = new Set(Object.keys(EnvSchema.properties));
  const direct = /process\.env(?:\.([A-Za-z_][A-Za-z0-9_]*)|\[\s*['"`]([A-Za-z_][A-Za-z0-9_]*)['"`]\s*\])/g;
  for (const dir of ['src', 'workers']) {
    for (const file of walk(join(ROOT, dir))) {
      if (!file.endsWith('.ts')) continue;
      for (const m of readFileSync(file, 'utf8').matchAll(direct)) names.add(m[1] ?? m[2]);
    }
  }
  // Tooling-only variables that no deployed process needs.
  for (const devOnly of ['NODE_ENV', 'CI']) names.delete(devOnly);
  return names;
}

function walk(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

function volumeMounts(service: Service): { source: string; target: string }[] {
  return (service.volumes ?? []).map((v) => {
    if (typeof v !== 'string') return { source: v.source ?? '', target: v.target };
    const [source, target] = v.split(':');
    return { source, target };
  });
}

function commandText(value: string[] | string | undefined): string {
  return Array.isArray(value) ? value.join(' ') : (value ?? '');
}

// ---- Dockerfile reading: instructions with line continuations, grouped into stages ----

interface Instruction {
  op: string;
  args: string;
}
interface Stage {
  name: string | undefined;
  from: string;
  instructions: Instruction[];
}
interface Dockerfile {
  args: Map<string, string>;
  stages: Stage[];
}

function parseDockerfile(path: string): Dockerfile {
  const logical: string[] = [];
  let pending = '';
  for (const raw of read(path).split('\n')) {
    const line = raw.trim();
    if (pending === '' && (line === '' || line.startsWith('#'))) continue;
    if (line.startsWith('#')) continue; // comments inside a continued RUN
    if (line.endsWith('\\')) {
      pending += line.slice(0, -1) + ' ';
      continue;
    }
    logical.push(pending + line);
    pending = '';
  }
  const args = new Map<string, string>();
  const stages: Stage[] = [];
  for (const text of logical) {
    const [op, ...rest] = text.split(/\s+/);
    const instruction = { op: op.toUpperCase(), args: rest.join(' ') };
    if (instruction.op === 'FROM') {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(instruction.args);
      assert.ok(m, `${path}: cannot read FROM ${instruction.args}`);
      stages.push({ from: m[1], name: m[2], instructions: [] });
    } else if (stages.length === 0 && instruction.op === 'ARG') {
      const [name, value = ''] = instruction.args.split('=');
      args.set(name, value);
    } else {
      assert.ok(stages.length > 0, `${path}: ${instruction.op} before the first FROM`);
      stages.at(-1)!.instructions.push(instruction);
    }
  }
  return { args, stages };
}

/** The image a stage finally builds on, following stage names and global ARG defaults. */
function baseImage(file: Dockerfile, stage: Stage): string {
  const from = stage.from.replace(/^\$\{?(\w+)\}?$/, (_, name: string) => file.args.get(name) ?? '');
  const parent = file.stages.find((s) => s.name === from);
  return parent ? baseImage(file, parent) : from;
}

function stageNamed(file: Dockerfile, name: string | undefined): Stage {
  const stage = name === undefined ? file.stages.at(-1) : file.stages.find((s) => s.name === name);
  assert.ok(stage, `no stage ${name ?? '(last)'}`);
  return stage;
}

/** The user a stage runs as: its last USER, inherited from parent stages. */
function effectiveUser(file: Dockerfile, stage: Stage): string {
  const own = stage.instructions.filter((i) => i.op === 'USER').at(-1);
  if (own) return own.args;
  const parent = file.stages.find((s) => s.name === stage.from);
  return parent ? effectiveUser(file, parent) : 'root';
}

function runLines(stage: Stage): string {
  return stage.instructions
    .filter((i) => i.op === 'RUN')
    .map((i) => i.args)
    .join('\n');
}

function execCommand(stage: Stage): string[] {
  const cmd = stage.instructions.filter((i) => i.op === 'CMD' || i.op === 'ENTRYPOINT').at(-1);
  assert.ok(cmd, `stage ${stage.name ?? ''} has no CMD`);
  return JSON.parse(cmd.args) as string[];
}

const apiFile = parseDockerfile('docker/api.Dockerfile');
const workerFile = parseDockerfile('docker/worker.Dockerfile');
const dockerignore = read('.dockerignore')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));

describe('docker-compose.yml', () => {
  test('declares redis, api and worker, each with a health check', () => {
    assert.deepEqual(Object.keys(services).sort(), ['api', 'redis', 'worker']);
    for (const [name, service] of Object.entries(services)) {
      assert.ok(service.healthcheck?.test && !service.healthcheck.disable, `${name} has no health check`);
    }
  });

  test('redis keeps jobs: AOF on, noeviction, data on a named volume', () => {
    const cmd = commandText(services.redis.command);
    assert.match(cmd, /--appendonly\s+yes\b/);
    assert.match(cmd, /--maxmemory-policy\s+noeviction\b/);
    const data = volumeMounts(services.redis).find((v) => v.target === '/data');
    assert.ok(data, 'redis /data is not on a volume');
    assert.ok(compose.volumes && data.source in compose.volumes, `volume ${data.source} is not declared`);
  });

  test('api and worker start after redis is healthy and point REDIS_URL at it', () => {
    for (const name of ['api', 'worker']) {
      assert.equal(services[name].depends_on?.redis?.condition, 'service_healthy', name);
      const url = new URL(String(services[name].environment?.REDIS_URL));
      assert.equal(url.hostname, 'redis', `${name} REDIS_URL`);
    }
  });

  test('api and worker set every environment variable the code reads', () => {
    const wanted = envVariablesReadByCode();
    assert.ok(wanted.has('REDIS_URL') && wanted.has('COTUNE_DATA_DIR'), 'the config schema was not read');
    for (const name of ['api', 'worker']) {
      const env = services[name].environment ?? {};
      const missing = [...wanted].filter((v) => !(v in env));
      assert.deepEqual(missing, [], `${name} lacks ${missing.join(', ')}`);
    }
  });

  test('the environment values pass the config schema', async () => {
    const { loadConfig } = await import('../../src/config.js');
    for (const name of ['api', 'worker']) {
      // Compose substitutes ${VAR:-default}; test with the defaults it would use.
      const env = Object.fromEntries(
        Object.entries(services[name].environment ?? {}).map(([k, v]) => [k, String(v ?? '').replace(/\$\{\w+:-([^}]*)\}/g, '$1')]),
      );
      const config = loadConfig(env);
      assert.equal(config.host, '0.0.0.0', `${name} must listen on all interfaces inside its container`);
    }
  });

  test('api publishes the port it listens on and its health check probes it', () => {
    const port = Number(services.api.environment?.PORT);
    const published = (services.api.ports ?? []).map((p) => (typeof p === 'string' ? Number(p.split(':').at(-1)) : p.target));
    assert.ok(published.includes(port), `api publishes ${published.join(', ')} but listens on ${port}`);
    assert.match(commandText(services.api.healthcheck?.test), new RegExp(`127\\.0\\.0\\.1:${port}/v1/health`));
  });

  test('api and worker share the data volume at COTUNE_DATA_DIR', () => {
    const sources = ['api', 'worker'].map((name) => {
      const dir = String(services[name].environment?.COTUNE_DATA_DIR);
      const mount = volumeMounts(services[name]).find((v) => v.target === dir);
      assert.ok(mount, `${name}: nothing mounted at COTUNE_DATA_DIR=${dir}`);
      assert.ok(compose.volumes && mount.source in compose.volumes, `${name}: ${mount.source} is not a named volume`);
      return mount.source;
    });
    assert.equal(sources[0], sources[1], 'api and worker use different data volumes');
  });

  test('the worker reserves a GPU and builds the GPU target', () => {
    const deploy = services.worker.deploy;
    assert.ok(deploy && !('reset' in deploy));
    const devices = deploy.resources?.reservations?.devices ?? [];
    assert.ok(
      devices.some((d) => d.driver === 'nvidia' && d.capabilities?.includes('gpu')),
      'no nvidia GPU reservation under deploy.resources.reservations.devices',
    );
    assert.equal(services.worker.build?.target, 'gpu');
    assert.ok(stageNamed(workerFile, 'gpu'));
    assert.equal(Number(services.worker.environment?.COTUNE_WORKER_CONCURRENCY), 1, 'one training job per GPU');
  });

  test('each built service points at an existing Dockerfile and target', () => {
    for (const [name, service] of Object.entries(services)) {
      if (!service.build) continue;
      assert.equal(service.build.context, '.', `${name} builds from the repository root`);
      assert.ok(service.build.dockerfile && existsSync(join(ROOT, service.build.dockerfile)), `${name}: ${service.build.dockerfile}`);
      const file = parseDockerfile(service.build.dockerfile);
      stageNamed(file, service.build.target);
    }
  });

  test('the CPU override swaps the worker to the CPU target without a GPU reservation', () => {
    const override = parseCompose('docker/compose.cpu.yml');
    assert.equal(override.services.worker.build?.target, 'cpu');
    assert.deepEqual(override.services.worker.deploy, { reset: true });
    assert.ok(stageNamed(workerFile, 'cpu'));
  });
});

describe('Dockerfiles', () => {
  const targets: [string, Dockerfile, string | undefined][] = [
    ['api', apiFile, undefined],
    ['worker gpu', workerFile, 'gpu'],
    ['worker cpu', workerFile, 'cpu'],
  ];

  test('are multi-stage: dependencies are installed in a stage the runtime copies from', () => {
    for (const [label, file, target] of targets) {
      assert.ok(file.stages.length >= 2, `${label} is single-stage`);
      const stage = stageNamed(file, target);
      const copiedFrom = stage.instructions.filter((i) => i.op === 'COPY').map((i) => /--from=(\S+)/.exec(i.args)?.[1]);
      assert.ok(copiedFrom.some((s) => s && s !== stage.name && file.stages.some((x) => x.name === s)), `${label} copies nothing from a build stage`);
      assert.doesNotMatch(runLines(stage), /npm (ci|install)\b/, `${label} installs packages in the runtime stage`);
    }
  });

  test('runtime stages run as a non-root user', () => {
    for (const [label, file, target] of targets) {
      const user = effectiveUser(file, stageNamed(file, target)).split(':')[0];
      assert.ok(!['root', '0', ''].includes(user), `${label} runs as ${user}`);
    }
  });

  test('run the TypeScript entry points through tsx, a runtime dependency', () => {
    const pkg = JSON.parse(read('package.json')) as { dependencies: Record<string, string> };
    assert.ok(pkg.dependencies.tsx, 'tsx must be a dependency (not dev) for the images');
    const entries: [string, Dockerfile, string | undefined, string][] = [
      ['api', apiFile, undefined, 'src/api/server.ts'],
      ['worker gpu', workerFile, 'gpu', 'workers/training.worker.ts'],
      ['worker cpu', workerFile, 'cpu', 'workers/training.worker.ts'],
    ];
    for (const [label, file, target, entry] of entries) {
      const stage = stageNamed(file, target);
      assert.deepEqual(execCommand(stage), ['node', '--import', 'tsx', entry], label);
      assert.ok(existsSync(join(ROOT, entry)), `${label}: ${entry} does not exist`);
      const copied = stage.instructions.filter((i) => i.op === 'COPY' && !i.args.startsWith('--from')).flatMap((i) => i.args.split(/\s+/).slice(0, -1));
      assert.ok(copied.includes(entry.split('/')[0]), `${label} does not copy ${entry.split('/')[0]}/`);
      // Production installs skip devDependencies.
      const deps = file.stages.filter((s) => runLines(s).includes('npm ci'));
      assert.ok(deps.length > 0 && deps.every((s) => /npm ci [^\n]*--omit=dev/.test(runLines(s))), `${label}: npm ci without --omit=dev`);
    }
  });

  test('the GPU target runs on CUDA 11.2 + cuDNN 8, what tfjs-node-gpu 4.x (libtensorflow 2.9.1) links', () => {
    const lock = JSON.parse(read('package-lock.json')) as { packages: Record<string, { version: string }> };
    const tfjsGpu = lock.packages['node_modules/@tensorflow/tfjs-node-gpu']?.version;
    assert.match(tfjsGpu ?? '', /^4\./, 'the CUDA pairing below is for tfjs-node-gpu 4.x');
    const image = baseImage(workerFile, stageNamed(workerFile, 'gpu'));
    assert.match(image, /^nvidia\/cuda:11\.2(\.\d+)?-cudnn8-(runtime|devel)-ubuntu\d+\.\d+$/, image);
    assert.doesNotMatch(baseImage(workerFile, stageNamed(workerFile, 'cpu')), /cuda/);
  });

  test('the GPU build approves exactly the tfjs-node-gpu install script (npm 11 allowScripts)', () => {
    const gpuDeps = workerFile.stages.filter((s) => /tfjs-node-gpu/.test(runLines(s)));
    assert.equal(gpuDeps.length, 1, 'one stage installs the GPU binding');
    const run = runLines(gpuDeps[0]);
    assert.match(run, /npm install -g npm@11\./, 'npm 11 (install-script policy) is used');
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { allowScripts?: Record<string, boolean> };
    assert.equal(pkg.allowScripts?.['@tensorflow/tfjs-node-gpu'], true, 'package.json approves the tfjs-node-gpu install script');
    assert.deepEqual(Object.entries(pkg.allowScripts ?? {}).filter(([, ok]) => ok).map(([name]) => name), ['@tensorflow/tfjs-node-gpu'], 'and no other');
    assert.match(run, /strict-allow-scripts=true/, 'an unapproved script must fail the build');
    assert.match(run, /npm rebuild @tensorflow\/tfjs-node-gpu/, 'the approved install script is run');
    assert.match(run, /tfjs_binding\.node/, 'the build checks the native binding was installed');
    assert.match(run, /libtensorflow\.so/, 'the build checks libtensorflow was downloaded');
    // The GPU runtime copies node_modules from that stage.
    assert.ok(stageNamed(workerFile, 'gpu').instructions.some((i) => i.op === 'COPY' && i.args.includes(`--from=${gpuDeps[0].name}`)));
  });

  test('.dockerignore keeps node_modules and VCS data out but lets every copied path in', () => {
    for (const excluded of ['node_modules', '.git']) assert.ok(dockerignore.includes(excluded), excluded);
    const copiedPaths = [apiFile, workerFile].flatMap((file) =>
      file.stages.flatMap((s) => s.instructions.filter((i) => i.op === 'COPY' && !i.args.includes('--from')).flatMap((i) => i.args.split(/\s+/).slice(0, -1))),
    );
    for (const path of new Set(copiedPaths)) {
      assert.ok(existsSync(join(ROOT, path)), `COPY ${path}: missing`);
      const blocked = dockerignore.some((p) => !p.startsWith('!') && (relative(p, path) === '' || !relative(p, path).startsWith('..')));
      assert.ok(!blocked, `COPY ${path} is excluded by .dockerignore`);
    }
  });
});
