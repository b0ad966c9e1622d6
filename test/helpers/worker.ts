import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Config } from '../../src/config.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface WorkerProcess {
  proc: ChildProcess;
  /** Everything the worker (and its processor children) printed. */
  output(): string;
  /** SIGTERM and wait for exit. */
  stop(): Promise<number | null>;
  /** SIGKILL (no cleanup at all) and wait for exit. */
  kill9(): Promise<void>;
}

/** Env for a worker that talks to the same Redis, prefix and data dir as a test app's config. */
export function workerEnv(config: Config, extra: Record<string, string> = {}): Record<string, string> {
  return {
    REDIS_URL: config.redisUrl,
    COTUNE_DATA_DIR: config.dataDir,
    COTUNE_QUEUE_PREFIX: config.queuePrefix,
    COTUNE_TF_BACKEND: config.tfBackend ?? '',
    COTUNE_WASM_THREADS: config.wasmThreads === undefined ? '' : String(config.wasmThreads),
    COTUNE_JOB_ATTEMPTS: String(config.jobs.attempts),
    COTUNE_BACKOFF_MS: String(config.jobs.backoffMs),
    COTUNE_LOCK_DURATION_MS: String(config.worker.lockDurationMs),
    COTUNE_STALLED_INTERVAL_MS: String(config.worker.stalledIntervalMs),
    COTUNE_SHUTDOWN_TIMEOUT_MS: String(config.worker.shutdownTimeoutMs),
    LOG_LEVEL: 'info',
    ...extra,
  };
}

// Not node:test's after(): called inside a test it would fire when that test ends.
const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const proc of running) proc.kill('SIGKILL');
});

/** Start `workers/training.worker.ts` as a real process; resolves once it reports ready. Killed when the test process exits. */
export async function spawnWorker(env: Record<string, string>, readyTimeoutMs = 60_000): Promise<WorkerProcess> {
  const proc = spawn(process.execPath, ['--import', 'tsx', 'workers/training.worker.ts'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  running.add(proc);
  proc.once('exit', () => running.delete(proc));
  const deadline = Date.now() + readyTimeoutMs;
  while (!out.includes('"worker ready"')) {
    if (proc.exitCode !== null) throw new Error(`worker exited early (${proc.exitCode}):\n${out}`);
    if (Date.now() > deadline) throw new Error(`worker not ready after ${readyTimeoutMs} ms:\n${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    proc,
    output: () => out,
    async stop() {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      return exited;
    },
    async kill9() {
      if (proc.exitCode === null) proc.kill('SIGKILL');
      await exited;
    },
  };
}
