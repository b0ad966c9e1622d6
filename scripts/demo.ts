/**
 * `npm run demo`: the whole service on one machine — Redis, the API, one worker — driven over
 * HTTP like any client: upload a dataset and a model, run a job, follow it, fetch the artifacts.
 * `npm run demo -- --help` lists the options.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import {
  DEMO_USAGE,
  type DemoArgs,
  type DemoHyperparameters,
  UsageError,
  parseDemoArgs,
} from '../src/demo/args.js';
import { ensureDemoAssets } from '../src/demo/assets.js';
import { ApiError, CotuneClient } from '../src/demo/client.js';
import { packDataset } from '../src/demo/pack.js';
import { ProgressView, accuracyTable } from '../src/demo/render.js';
import { freePort, pingRedis } from './lib/redis-server.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
/** Sized for the embedded 32 px shapes: a couple of minutes per run on two busy cores. */
const EMBEDDED_HYPERPARAMETERS: DemoHyperparameters = { iterations: 300, batchSize: 32 };
const STOP_GRACE_MS = 10_000;

class DemoError extends Error {}

interface Service {
  name: string;
  child: ChildProcess;
  log: string;
  exited: Promise<number | null>;
}

const cleanups: (() => Promise<void>)[] = [];
/** Temp folder for packed data and the service's blobs; also removed on a forced exit. */
let workDir: string | undefined;
const services: Service[] = [];
const started = Date.now();
const stamp = () => `${((Date.now() - started) / 1000).toFixed(1)}s`.padStart(6);
const say = (text: string) => process.stdout.write(`[${stamp()}] ${text}\n`);

/** Start a service entry point under tsx, in its own process group so Ctrl-C reaches only us. */
function startService(name: string, entry: string, env: NodeJS.ProcessEnv, logDir: string): Service {
  const log = join(logDir, `${name}.log`);
  const fd = openSync(log, 'a');
  const child = spawn(process.execPath, ['--import', 'tsx', join(REPO, entry)], {
    cwd: REPO,
    env,
    detached: true,
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  const service = { name, child, log, exited };
  services.push(service);
  return service;
}

async function stopService(service: Service): Promise<void> {
  const { child } = service;
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => {
    // The whole group: the worker's sandboxed processor children go too.
    if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
  }, STOP_GRACE_MS);
  await service.exited;
  clearTimeout(timer);
}

/** Last resort when we exit without a clean shutdown: no orphaned service processes. */
process.on('exit', () => {
  for (const { child } of services) {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

/**
 * A private redis-server like test/helpers' startRedis (same settings), but in its own process
 * group: Ctrl-C in the terminal must not kill Redis before the job is cancelled and the worker
 * and API have closed.
 */
async function startPrivateRedis(
  logDir: string,
): Promise<{ url: string; port: number; stop: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'cotune-demo-redis-'));
  const port = await freePort();
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--save',
    '',
    '--appendonly',
    'no',
  ];
  args.push('--maxmemory-policy', 'noeviction', '--logfile', join(logDir, 'redis.log'));
  const child = spawn('redis-server', args, { detached: true, stdio: 'ignore' });
  let failure: string | undefined;
  child.once(
    'error',
    (err) => (failure = `cannot start redis-server (${err.message}); install it or set REDIS_URL`),
  );
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  const service: Service = { name: 'redis', child, log: join(logDir, 'redis.log'), exited };
  services.push(service);
  const stop = async () => {
    await stopService(service);
    await rm(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 10_000;
  while (!(await pingRedis(port))) {
    if (child.exitCode !== null)
      failure ??= `redis-server exited with code ${child.exitCode}; see ${service.log}`;
    if (!failure && Date.now() > deadline)
      failure = `redis-server did not answer on port ${port} within 10 s`;
    if (failure) {
      await stop();
      throw new DemoError(failure);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url: `redis://127.0.0.1:${port}`, port, stop };
}

/** On a shared Redis, remove this run's keys (everything lives under its own prefix). */
async function removeKeys(url: string, prefix: string): Promise<void> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    const pattern = `${prefix.replace(/[[\]*?\\]/g, (c) => `\\${c}`)}*`; // glob-escaped
    for (let cursor = '0'; ;) {
      const [next, found] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 500);
      if (found.length > 0) await redis.unlink(...found);
      cursor = next;
      if (cursor === '0') break;
    }
  } finally {
    redis.disconnect();
  }
}

/** Resolves when /v1/health answers 200; `wedged` when the API listens but keeps answering 5xx. */
async function waitForApi(
  client: CotuneClient,
  api: Service,
  signal: AbortSignal,
  timeoutMs: number,
): Promise<'ok' | 'wedged'> {
  const deadline = Date.now() + timeoutMs;
  let lastError = 'no answer';
  let answered = false;
  while (Date.now() < deadline) {
    signal.throwIfAborted();
    if (api.child.exitCode !== null)
      throw new DemoError(`the API exited with code ${api.child.exitCode}; see ${api.log}`);
    try {
      await client.health(AbortSignal.timeout(2000));
      return 'ok';
    } catch (err) {
      answered ||= err instanceof ApiError;
      lastError = (err as Error).message;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  if (answered) return 'wedged';
  throw new DemoError(
    `the API did not answer /v1/health within ${timeoutMs / 1000} s (${lastError}); see ${api.log}`,
  );
}

async function waitForWorker(client: CotuneClient, worker: Service, signal: AbortSignal): Promise<string> {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    signal.throwIfAborted();
    if (worker.child.exitCode !== null)
      throw new DemoError(`the worker exited with code ${worker.child.exitCode}; see ${worker.log}`);
    const health = await client.health().catch(() => undefined);
    if (health && health.workers.length > 0) return health.workers[0].backend;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new DemoError(`no worker reported to /v1/health within 120 s; see ${worker.log}`);
}

async function run(args: DemoArgs, signal: AbortSignal): Promise<number> {
  const outDir = resolve(args.out);
  const logDir = join(outDir, 'logs');
  const work = await mkdtemp(join(tmpdir(), 'cotune-demo-'));
  workDir = work;
  cleanups.push(() => rm(work, { recursive: true, force: true }));

  // Inputs first: a bad --data or --model fails before anything is started.
  let modelDir: string;
  let classNamesPath: string | undefined;
  let archive: string;
  const hyperparameters: DemoHyperparameters = { ...args.hyperparameters };
  if (args.model) {
    modelDir = resolve(args.model);
    if (!existsSync(join(modelDir, 'model.json')))
      throw new UsageError(`--model: ${args.model} has no model.json`);
    classNamesPath = args.classNames ? resolve(args.classNames) : join(modelDir, 'class-names.json');
    if (args.classNames && !existsSync(classNamesPath))
      throw new UsageError(`--class-names: ${args.classNames} does not exist`);
    if (!existsSync(classNamesPath)) classNamesPath = undefined;
  }
  if (args.data) archive = await packDataset(args.data, work);
  if (!args.model || !args.data) {
    const assetsDir = resolve(args.assetsDir ?? join(REPO, 'node_modules', '.cache', 'cotune-demo'));
    say(`embedded default: assets in ${assetsDir} (generated on first use, about a minute)`);
    const assets = await ensureDemoAssets(assetsDir, { log: (m) => say(`  ${m}`) });
    if (!assets.generated) {
      say(
        `  cached: source model held-out top-1 ${(assets.pretrain.heldOutTop1 * 100).toFixed(1)}% over ${assets.sourceClasses.length} classes`,
      );
    }
    if (!args.model) {
      modelDir = assets.modelDir;
      classNamesPath = assets.sourceClassNamesPath;
    }
    if (!args.data) {
      archive = assets.datasetArchive;
      if (!args.model)
        Object.assign(hyperparameters, { ...EMBEDDED_HYPERPARAMETERS, ...args.hyperparameters });
    }
  }
  if (signal.aborted) return 130;
  await mkdir(logDir, { recursive: true });

  const queuePrefix = `{cotune-demo-${process.pid}}`;
  let redisUrl = process.env.REDIS_URL;
  if (redisUrl) {
    say(`redis: ${redisUrl} (REDIS_URL; this run's keys are removed at the end)`);
    const shared = redisUrl;
    cleanups.push(() => removeKeys(shared, queuePrefix));
  } else {
    const redis = await startPrivateRedis(logDir);
    cleanups.push(() => redis.stop());
    redisUrl = redis.url;
    say(`redis: private redis-server on port ${redis.port}`);
  }
  const port = await freePort();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    REDIS_URL: redisUrl,
    HOST: '127.0.0.1',
    PORT: String(port),
    COTUNE_DATA_DIR: join(work, 'service-data'),
    // Our own keys, so a shared REDIS_URL never mixes this run with anything else.
    COTUNE_QUEUE_PREFIX: queuePrefix,
    COTUNE_API_KEYS: '',
    COTUNE_SHUTDOWN_TIMEOUT_MS: String(STOP_GRACE_MS - 2000),
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'info',
  };
  const client = new CotuneClient(`http://127.0.0.1:${port}`);
  let api = startService('api', 'src/api/server.ts', env, logDir);
  cleanups.push(() => stopService(api));
  if ((await waitForApi(client, api, signal, 60_000)) === 'wedged') {
    // Seen once on a loaded machine: the API's Redis client answered every ping with
    // "Command timed out" while Redis itself was fine. Say so, and start a fresh API once.
    say(`api: /v1/health still failing after 60 s (see ${api.log}); restarting the API once`);
    await stopService(api);
    api = startService('api', 'src/api/server.ts', env, logDir);
    if ((await waitForApi(client, api, signal, 60_000)) === 'wedged') {
      throw new DemoError(`the API answers /v1/health with errors only; see ${api.log}`);
    }
  }
  say(`api: ${client.baseUrl} (log: ${api.log})`);
  const worker = startService('worker', 'workers/training.worker.ts', env, logDir);
  cleanups.push(() => stopService(worker));
  const workerReady = waitForWorker(client, worker, signal);
  workerReady.catch(() => undefined);

  const dataset = await client.uploadDataset(
    archive!,
    args.data ? basename(resolve(args.data)) : 'demo-shapes.tar.gz',
  );
  const splits = Object.entries(dataset.counts)
    .map(([split, perClass]) => `${split} ${Object.values(perClass).reduce((a, b) => a + b, 0)}`)
    .join(', ');
  say(
    `dataset ${dataset.id}: ${dataset.images} images, ${dataset.classes.length} classes, ${dataset.layout} (${splits})`,
  );
  if (dataset.rejected.length > 0)
    say(
      `  ${dataset.rejected.length} file(s) skipped, e.g. ${dataset.rejected[0].path}: ${dataset.rejected[0].reason}`,
    );
  const model = await client.uploadModel(modelDir!, {
    classNamesPath,
    name: args.model ? basename(resolve(args.model)) : 'demo-shapes-source',
  });
  say(
    `model ${model.id}: input ${model.inputShape.join('×')}, source head "${model.headLayer}" (${model.headKind}, ${model.numSourceClasses} classes)`,
  );
  say(`worker: ready, TF.js backend ${await workerReady} (log: ${worker.log})`);

  const job = await client.createJob({
    datasetId: dataset.id,
    modelId: model.id,
    method: args.method,
    hyperparameters,
    seed: args.seed,
  });
  const hp = job.hyperparameters;
  say(
    `job ${job.id}: ${job.method}, ${hp.epochs ? `${hp.epochs} epochs` : `${hp.iterations} iterations`}, batch ${hp.batchSize}, λ ${hp.lambda}, seed ${job.seed}`,
  );

  const view = new ProgressView(process.stdout, started);
  const following = new AbortController();
  const onAbort = () => following.abort();
  signal.addEventListener('abort', onAbort, { once: true });
  const workerDied = worker.exited.then((code) => {
    following.abort();
    return code;
  });
  try {
    await client.followEvents(job.id, { signal: following.signal, onEvent: (e) => view.event(e) });
  } finally {
    view.finish();
    signal.removeEventListener('abort', onAbort);
  }
  if (signal.aborted) {
    say(`interrupted: cancelling job ${job.id}`);
    await client.cancelJob(job.id, AbortSignal.timeout(3000)).catch(() => undefined);
    return 130;
  }
  if (worker.child.exitCode !== null) {
    throw new DemoError(`the worker exited with code ${await workerDied} during the job; see ${worker.log}`);
  }

  const final = await client.getJob(job.id);
  if (final.status !== 'succeeded') {
    const why = final.error ? `${final.error.code}: ${final.error.message}` : 'no error recorded';
    throw new DemoError(`job ${final.id} ${final.status} (${why}); see ${worker.log}`);
  }
  const artifacts = await client.listArtifacts(job.id);
  for (const artifact of artifacts) await client.downloadArtifact(artifact, outDir);
  say(`artifacts: ${artifacts.length} files in ${outDir}`);
  process.stdout.write(`\n${accuracyTable(final)}\n\n`);
  return 0;
}

/** One line for expected failures (HTTP problems, unreachable services); a stack for bugs. */
function describeError(err: unknown): string {
  if (err instanceof DemoError || err instanceof ApiError) return err.message;
  const e = err as Error & { cause?: { message?: string } };
  if (e instanceof TypeError && e.cause?.message) return `${e.message}: ${e.cause.message}`;
  return e.stack ?? String(err);
}

async function main(): Promise<number> {
  let args: DemoArgs;
  try {
    args = parseDemoArgs(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`demo: ${err.message} (see --help)\n`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(`${DEMO_USAGE}\n`);
    return 0;
  }
  const interrupt = new AbortController();
  let interrupts = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    interrupts += 1;
    if (interrupts > 1) {
      process.stderr.write('demo: stopping now\n');
      process.exit(130);
    }
    process.stderr.write(`\ndemo: ${sig}: shutting down (again to force)\n`);
    // Nothing started yet (e.g. generating the assets, whose cache stamp is written last): just go.
    if (services.length === 0) process.exit(130);
    interrupt.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  let code: number;
  try {
    code = await run(args, interrupt.signal);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`demo: ${err.message}\n`);
      code = 2;
    } else if (interrupt.signal.aborted) {
      code = 130;
    } else {
      process.stderr.write(`demo: ${describeError(err)}\n`);
      code = 1;
    }
  }
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  if (code === 0) say('done: services stopped');
  return code;
}

process.exit(await main());
