/**
 * Local development: `npm run dev:api` / `npm run dev:worker` (or `dev` for both). Without
 * REDIS_URL, a private redis-server is started (same logic as the tests) and its URL is written
 * to a port file, so a second dev process reuses it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pingRedis, startRedis, type LocalRedis } from './lib/redis-server.js';

const what = process.argv[2] ?? 'all';
if (!['api', 'worker', 'all'].includes(what)) {
  console.error('usage: tsx scripts/dev.ts api|worker|all');
  process.exit(2);
}
const portFile = join(tmpdir(), 'cotune-dev-redis.port');
let owned: LocalRedis | undefined;

async function redisUrl(): Promise<string> {
  if (process.env.REDIS_URL) return process.env.REDIS_URL;
  const port = Number(await readFile(portFile, 'utf8').catch(() => '0'));
  if (port && (await pingRedis(port))) return `redis://127.0.0.1:${port}`;
  owned = await startRedis();
  await writeFile(portFile, String(owned.port));
  console.error(`dev: started a private redis-server at ${owned.url} (stops with this process)`);
  return owned.url;
}

const env = { ...process.env, REDIS_URL: await redisUrl(), COTUNE_DATA_DIR: process.env.COTUNE_DATA_DIR ?? './data' };
await mkdir(env.COTUNE_DATA_DIR, { recursive: true });
const entries = { api: 'src/api/server.ts', worker: 'workers/training.worker.ts' };
const children: ChildProcess[] = (what === 'all' ? (['api', 'worker'] as const) : [what as 'api' | 'worker']).map((name) =>
  spawn(process.execPath, ['--import', 'tsx', entries[name]], { env, stdio: 'inherit' }),
);

let stopping = false;
async function stop(signal: NodeJS.Signals) {
  if (stopping) return;
  stopping = true;
  for (const child of children) child.kill(signal);
  await Promise.all(children.map((c) => (c.exitCode === null ? new Promise((r) => c.once('exit', r)) : undefined)));
  if (owned) {
    await owned.stop();
    await rm(portFile, { force: true });
  }
  process.exit(0);
}
process.on('SIGINT', () => void stop('SIGINT'));
process.on('SIGTERM', () => void stop('SIGTERM'));
for (const child of children) child.on('exit', (code) => (stopping ? undefined : (console.error(`dev: a process exited with ${code}`), void stop('SIGTERM'))));
