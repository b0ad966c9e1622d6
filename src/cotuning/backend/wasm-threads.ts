import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { join } from 'node:path';
import workerThreads from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs';
import { getThreadsCount, setThreadsCount } from '@tensorflow/tfjs-backend-wasm';

/**
 * XNNPACK threads for tfjs-backend-wasm under Node.
 *
 * tfjs-backend-wasm 4.22 never uses its threaded build under Node (WASM_HAS_MULTITHREAD_SUPPORT
 * is forced off there, tfjs#3830): emscripten's pthread start-up assumes a browser. For the one
 * tf.setBackend('wasm') call that initialises the backend, this module fills the gaps:
 *  - `Blob` / `URL.createObjectURL`: emscripten hands its pthread worker script and its own
 *    factory source to the workers as blobs, which Node's Worker cannot load; they become files
 *    in a private temp folder, deleted as soon as the workers have loaded them.
 *  - The factory source is a function cut out of rollup's bundle; the workers eval it without
 *    the bundle's top-level `require$$N` / `commonjsGlobal` variables, so those are appended.
 *  - `os.cpus()`: the C++ caps the pool at emscripten_num_logical_cores() / 2, which is 1 on a
 *    2-core machine, so it reports at least 2 × threads cores.
 *  - the pthread workers' scheduling priority: on Linux each lowers its own (POOL_NICE).
 *  - `worker_threads.Worker`: to hold the pthread workers. A worker error during start-up then
 *    fails the start-up (and we fall back to 1 thread) instead of emscripten rethrowing it as an
 *    uncaught exception; afterwards the workers are unref'd, because emscripten keeps running
 *    pthreads ref'd and the process would otherwise never exit on its own.
 * Every global is restored right after start-up.
 */

/** emscripten pre-spawns 8 pthread workers; more would be spawned later, from files that are gone. */
export const MAX_WASM_THREADS = 8;

/**
 * Threads when none are asked for: 2 where there are 2 cores. Measured with `npm run
 * bench:train` on 2 cores: a MobileNet training step takes 30-50 % less time on 2 threads than
 * on 1 (inference 40-45 % less; 2026-12-04, Zen 4), as long as nothing else needs the second core.
 */
export function defaultWasmThreads(): number {
  return Math.max(1, Math.min(2, os.availableParallelism()));
}
/**
 * Nice value of XNNPACK's pool threads (the pthread workers), on Linux. After each of its
 * kernels a pool thread polls for the next one for about 1.7 ms (pthreadpool's spin), and in a
 * training step our own kernels run in between, on helper threads (kernel-threads.ts) that then
 * share a core with the polling pool thread. A lower priority for the pool thread gives that
 * core to the helper while the pool thread only polls; when XNNPACK has work, our helpers are
 * asleep and the pool thread gets the core as before. Measured in one process, alternating
 * nice 0 and this value between rounds of the fine-tune step on 2 threads: 6-8 % less time per
 * step at 96 and 128 px (3.5 % at nice 5, 8-10 % at 19), inference unchanged.
 * Each thread sets its own (setpriority on thread 0 is per-thread on Linux only, so other
 * platforms keep the default).
 */
export const POOL_NICE = 10;
/**
 * Run by each pthread worker. Only ever lowers: a process started at a nice above POOL_NICE
 * keeps its own (raising it would need privileges), and a failure leaves the default.
 */
const LOWER_POOL_PRIORITY = `try { const os = require('node:os'); if (os.getPriority(0) < ${POOL_NICE}) os.setPriority(0, ${POOL_NICE}); } catch {}`;

/** Start-up takes well under a second; this only guards against a worker that never answers. */
const INIT_TIMEOUT_MS = 60_000;

/**
 * tf.setBackend('wasm') with `threads` XNNPACK threads (1 = the stock single-threaded build).
 * If the threaded start-up fails for any reason, warns and starts the single-threaded build;
 * getThreadsCount() tells what is in use. Call before any other tf.setBackend('wasm').
 */
export async function setWasmBackend(threads: number): Promise<boolean> {
  if (threads > 1) {
    let problem: string;
    try {
      if (await startThreaded(Math.min(threads, MAX_WASM_THREADS))) {
        if (getThreadsCount() !== threads) console.warn(`cotune: WASM backend asked for ${threads} threads, runs ${getThreadsCount()}`);
        return true;
      }
      problem = 'initialisation failed (see the warning above)';
    } catch (err) {
      problem = (err as Error).message;
    }
    console.warn(`cotune: WASM threads unavailable (${problem}); using 1 thread`);
  }
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
  setThreadsCount(1);
  return tf.setBackend('wasm');
}

async function startThreaded(threads: number): Promise<boolean> {
  const requires = bundleRequires();
  const dir = mkdtempSync(join(os.tmpdir(), 'cotune-wasm-'));
  const removeDir = (): void => rmSync(dir, { recursive: true, force: true });
  process.once('exit', removeDir); // in case start-up never returns
  let fail: (err: Error) => void = () => {};
  const failed = new Promise<never>((_, reject) => (fail = reject));
  failed.catch(() => {}); // a late failure must not become an unhandled rejection
  const timer = setTimeout(() => fail(new Error(`no answer from the pthread workers after ${INIT_TIMEOUT_MS / 1000} s`)), INIT_TIMEOUT_MS);
  const shims = installShims(dir, threads, requires, (err) => fail(err));
  let ok = false;
  try {
    tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
    setThreadsCount(threads);
    ok = await Promise.race([tf.setBackend('wasm'), failed]);
    return ok;
  } finally {
    clearTimeout(timer);
    shims.restore(ok);
    // Loaded workers have read both scripts; nothing reads the folder again.
    removeDir();
    process.off('exit', removeDir);
    for (const worker of shims.workers) {
      if (ok) worker.unref();
      else void worker.terminate();
    }
  }
}

/** The bundle's own `var require$$N = require('module')` lines, which the factory source relies on. */
function bundleRequires(): Map<string, string> {
  const bundle = readFileSync(createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm'), 'utf8');
  return new Map([...bundle.matchAll(/^var (require\$\$\d+) = require\('([^']+)'\);$/gm)].map((m) => [m[1], m[2]]));
}

/** Installs the shims described at the top; nothing in here throws before they are all in place. */
function installShims(dir: string, threads: number, requires: Map<string, string>, onWorkerError: (err: Error) => void) {
  const saved = { Blob: globalThis.Blob, createObjectURL: URL.createObjectURL, cpus: os.cpus, Worker: workerThreads.Worker };
  let divertErrors = true;
  let files = 0;

  /** A script as a file; what the workers receive of it (a structured clone) is its path. */
  class ScriptFile {
    readonly path = join(dir, `script-${files++}.cjs`);
    constructor(source: string) {
      const missing = [...new Set(source.match(/require\$\$\d+/g))].filter((name) => !requires.has(name));
      if (missing.length) throw new Error(`tfjs-backend-wasm's factory uses ${missing.join(', ')}, not defined in its bundle`);
      // Appended to both scripts (the worker script and the factory source it evals), so that
      // "use strict" stays first: the bundle's variables, a createObjectURL for our files, and
      // the pool thread's priority. Both run only inside pthread workers.
      const suffix = [
        ...[...requires].map(([name, module]) => `var ${name} = require(${JSON.stringify(module)});`),
        'var commonjsGlobal = globalThis;',
        'URL.createObjectURL = (file) => file.path; URL.revokeObjectURL = () => {};',
        ...(process.platform === 'linux' ? [LOWER_POOL_PRIORITY] : []),
      ];
      writeFileSync(this.path, `${source}\n;${suffix.join('\n')}\n`);
    }
  }
  // Only emscripten's scripts (type */javascript) become files; any other Blob stays a real one.
  globalThis.Blob = function (parts: unknown[], options?: { type?: string }) {
    return /javascript/.test(options?.type ?? '') ? new ScriptFile(parts.join('')) : new saved.Blob(parts as ConstructorParameters<typeof Blob>[0], options);
  } as unknown as typeof Blob;
  URL.createObjectURL = (obj: Blob) => (obj instanceof ScriptFile ? obj.path : saved.createObjectURL(obj));

  os.cpus = () => {
    const cpus = saved.cpus();
    while (cpus.length < 2 * threads) cpus.push(cpus[0]);
    return cpus;
  };

  const workers: workerThreads.Worker[] = [];
  class TrackedWorker extends saved.Worker {
    constructor(...args: ConstructorParameters<typeof workerThreads.Worker>) {
      super(...args);
      workers.push(this);
    }
    override emit(event: string | symbol, ...args: unknown[]): boolean {
      if (event === 'error' && divertErrors) {
        onWorkerError(args[0] instanceof Error ? args[0] : new Error(String(args[0])));
        return true;
      }
      return super.emit(event, ...args);
    }
  }
  workerThreads.Worker = TrackedWorker;

  return {
    workers,
    /** After a failed start-up the workers' errors stay diverted (they are being terminated). */
    restore(started: boolean): void {
      divertErrors = !started;
      globalThis.Blob = saved.Blob;
      URL.createObjectURL = saved.createObjectURL;
      os.cpus = saved.cpus;
      workerThreads.Worker = saved.Worker;
    },
  };
}
