import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A redis-server process that this process started and owns. */
export interface LocalRedis {
  url: string;
  port: number;
  dir: string;
  /** Stop the server (SIGTERM, then SIGKILL after 3 s); idempotent. Removes the temp dir unless `keepDir`. */
  stop(options?: { keepDir?: boolean }): Promise<void>;
  /** Start it again on the same port and dir (after stop({ keepDir: true })). */
  restart(): Promise<void>;
  /** Synchronous SIGKILL and temp-dir removal, for process 'exit' handlers. */
  kill(): void;
}

export interface StartRedisOptions {
  /** Extra redis-server arguments, e.g. ['--maxmemory-policy', 'allkeys-lru']. */
  args?: string[];
  port?: number;
  /** Log file name inside the temp dir; default: none (logs go nowhere). */
  logFile?: string;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Resolves true once something accepts TCP connections and answers PING with PONG. */
export async function pingRedis(port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (data) => done(data.toString().startsWith('+PONG')));
  });
}

async function waitUntil(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/**
 * Start a private redis-server (from PATH) on a free loopback port in a fresh temp dir.
 * No persistence and noeviction, as BullMQ requires.
 */
export async function startRedis(options: StartRedisOptions = {}): Promise<LocalRedis> {
  const dir = await mkdtemp(join(tmpdir(), 'cotune-redis-'));
  const port = options.port ?? (await freePort());
  let child: ChildProcess | undefined;

  const launch = async () => {
    const args = [
      '--port', String(port),
      '--bind', '127.0.0.1',
      '--dir', dir,
      '--save', '',
      '--appendonly', 'no',
      '--maxmemory-policy', 'noeviction',
      '--logfile', options.logFile ? join(dir, options.logFile) : '',
      ...(options.args ?? []),
    ];
    const proc = spawn('redis-server', args, { stdio: 'ignore' });
    // Owners stop it explicitly; an unref'd child never keeps a finished test process alive.
    proc.unref();
    child = proc;
    let failed: Error | undefined;
    proc.on('error', (err) => {
      failed = new Error(`could not start redis-server from PATH: ${err.message}`);
    });
    await waitUntil(async () => {
      if (failed) throw failed;
      if (proc.exitCode !== null) throw new Error(`redis-server exited with code ${proc.exitCode}`);
      return pingRedis(port);
    }, 10_000, `redis-server on port ${port}`);
  };

  const stopProcess = async () => {
    const proc = child;
    child = undefined;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
  };

  await launch();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    dir,
    async stop({ keepDir = false } = {}) {
      await stopProcess();
      if (!keepDir) await rm(dir, { recursive: true, force: true });
    },
    async restart() {
      await stopProcess();
      await launch();
    },
    kill() {
      child?.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
