import { Worker } from 'node:worker_threads';

/**
 * Helper threads for our WASM kernels (kernels.wat).
 *
 * With WASM threads XNNPACK spreads the backend's own kernels over its thread pool, but ours ran
 * on the calling thread alone, and they are about half of a training step. Each helper
 * instantiates the same kernel module on the backend's shared memory. A call is cut into chunks
 * (ranges of images, rows or pixels) that the calling thread and the helpers claim one at a
 * time, so a thread that gets less of a core (XNNPACK's pool threads spin for a while after each
 * of their kernels) simply runs fewer chunks. Hand-over is through Atomics on a shared control
 * block, not messages: a step makes a few hundred kernel calls, and a message round trip costs
 * more than a small kernel.
 */
export interface KernelThreads {
  /** Threads that run chunks: the helpers plus the calling thread. */
  readonly threads: number;
  /** Runs kernel `name` once per argument list in `chunks`, on every thread; returns when all are done. */
  run(name: string, chunks: number[][]): void;
  /** Chunks the helpers have run so far (shows that they take part). */
  helperChunks(): number;
}

/** Most chunks in one call, and most arguments of a kernel. */
export const MAX_CHUNKS = 64;
const MAX_ARGS = 32;

/** Int32 slots of the control block. */
const SEQ = 0; // call counter: helpers wake when it changes
const NEXT = 1; // the call's tag and the range of its unclaimed chunks, packed (see claimWord)
const FINISHED = 2; // chunks of the current call that have run
const FN = 3; // index of the kernel in the helpers' list
const ARGC = 4;
const FAILED = 5; // 1 when a chunk threw on a helper
const HELPER_CHUNKS = 6; // chunks run by helpers, ever
const CONTROL_SLOTS = 8;

/**
 * NEXT holds tag (15 bits) | high (8 bits) | low (8 bits): chunks low to high − 1 are unclaimed.
 * The calling thread claims from the bottom and the helpers from the top, so that each thread
 * keeps to about the same part of the data from one kernel to the next (as XNNPACK's pool does),
 * and reads what it wrote from its own core's cache: 1.5 % off a 96-px training step on 2 threads,
 * measured in one process, alternating. A thread claims a chunk by compare-and-swap of the whole
 * word, so a helper that wakes late, when the call it was woken for is over, finds another tag
 * and claims nothing of the next call by mistake.
 */
const claimWord = (seq: number, count: number): number => ((seq & 0x7fff) << 16) | (count << 8);
/** No call open: no tag matches, nothing can be claimed. */
const CLOSED = -1;

/**
 * How long a thread with nothing to do polls before it blocks in Atomics.wait. Kernel calls in
 * a step come a few tens of µs apart and waking a blocked thread takes about as long, but a
 * helper that polls longer takes the core from XNNPACK's pool thread.
 */
const HELPER_SPIN_MS = 0.05;
/** The caller's wait for the helpers' last chunks, which end about when its own do. */
const CALLER_SPIN_MS = 0.2;
/** A chunk never takes this long; if the last one has not finished by then, its helper is gone. */
const HELPER_TIMEOUT_MS = 60_000;

/**
 * The loop both sides run: claim the call's chunks one by one until none is left. Shared as
 * source so the helpers (evaluated from a string, plain JS) and the caller run the same code.
 */
const CLAIM_LOOP = `(control, table, seq, kernel, onError, fromTop) => {
  const tag = ((seq & 0x7fff) << 16);
  for (let ran = 0; ; ran++) {
    const word = Atomics.load(control, ${NEXT});
    if ((word & ~0xffff) !== tag) return ran;
    const low = word & 0xff;
    const high = (word >> 8) & 0xff;
    if (low >= high) return ran;
    const chunk = fromTop ? high - 1 : low;
    if (Atomics.compareExchange(control, ${NEXT}, word, fromTop ? word - 0x100 : word + 1) !== word) {
      ran--;
      continue;
    }
    try {
      const at = chunk * ${MAX_ARGS};
      kernel(...table.subarray(at, at + control[${ARGC}]));
    } catch (err) {
      onError(err);
    } finally {
      Atomics.add(control, ${FINISHED}, 1);
      Atomics.notify(control, ${FINISHED});
    }
  }
}`;

type ClaimLoop = (
  control: Int32Array,
  table: Float64Array,
  seq: number,
  kernel: (...args: number[]) => void,
  onError: (err: unknown) => void,
  fromTop: boolean,
) => number;
// Built from the same source as the helpers' copy.
const claimChunks = new Function(`return ${CLAIM_LOOP}`)() as ClaimLoop;

/** Runs inside each helper: CommonJS, evaluated from this string so no loader is needed. */
const HELPER_SOURCE = `
const { workerData } = require('node:worker_threads');
const { module, memory, control, table, names, spinMs } = workerData;
const instance = new WebAssembly.Instance(module, { tfjs: { memory } });
const kernels = names.map((name) => instance.exports[name]);
const claimChunks = ${CLAIM_LOOP};
const onError = (err) => {
  Atomics.store(control, ${FAILED}, 1);
  console.error('cotune: WASM kernel helper:', err);
};
let seen = 0;
for (;;) {
  const until = performance.now() + spinMs;
  while (Atomics.load(control, ${SEQ}) === seen && performance.now() < until);
  Atomics.wait(control, ${SEQ}, seen);
  seen = Atomics.load(control, ${SEQ});
  const ran = claimChunks(control, table, seen, kernels[control[${FN}]], onError, true);
  if (ran) Atomics.add(control, ${HELPER_CHUNKS}, ran);
}
`;

/**
 * Starts `count` helpers running the kernels of `module` on `memory` (a shared WebAssembly
 * memory); `exports` is the calling thread's own instance of the same module. Helpers are
 * unref'd: they never keep the process alive.
 */
export function startKernelThreads(
  module: object,
  memory: object,
  exports: Record<string, (...args: number[]) => void>,
  count: number,
): KernelThreads {
  const names = Object.keys(exports).filter((name) => typeof exports[name] === 'function');
  const index = new Map(names.map((name, i) => [name, i]));
  const control = new Int32Array(new SharedArrayBuffer(CONTROL_SLOTS * 4));
  const table = new Float64Array(new SharedArrayBuffer(MAX_CHUNKS * MAX_ARGS * 8));
  control[NEXT] = CLOSED;
  for (let i = 0; i < count; i++) {
    const worker = new Worker(HELPER_SOURCE, {
      eval: true,
      workerData: { module, memory, control, table, names, spinMs: HELPER_SPIN_MS },
    });
    worker.unref();
  }

  /** Waits until `finished` chunks of the current call have run (ours are counted already). */
  const waitForChunks = (finished: number, name: string): void => {
    // The helpers' last chunks end about when ours do: poll briefly before blocking.
    const spinUntil = performance.now() + CALLER_SPIN_MS;
    while (Atomics.load(control, FINISHED) < finished && performance.now() < spinUntil);
    const giveUp = performance.now() + HELPER_TIMEOUT_MS;
    for (;;) {
      // Wait on the value just checked: a finish between the check and the wait ends the wait.
      const now = Atomics.load(control, FINISHED);
      if (now >= finished) return;
      if (performance.now() > giveUp) throw new Error(`wasm kernels: a helper thread did not finish ${name}`);
      Atomics.wait(control, FINISHED, now, 1);
    }
  };

  let seq = 0;
  return {
    threads: count + 1,
    helperChunks: () => Atomics.load(control, HELPER_CHUNKS),
    run(name, chunks) {
      const fn = index.get(name);
      if (fn === undefined) throw new Error(`wasm kernels: no kernel ${name}`);
      if (chunks.length < 1 || chunks.length > MAX_CHUNKS) throw new Error(`wasm kernels: ${chunks.length} chunks (1 to ${MAX_CHUNKS})`);
      const argc = chunks[0].length;
      if (argc > MAX_ARGS || chunks.some((c) => c.length !== argc)) throw new Error(`wasm kernels: ${name} chunks need the same arguments, at most ${MAX_ARGS}`);
      chunks.forEach((args, i) => table.set(args, i * MAX_ARGS));
      control[FN] = fn;
      control[ARGC] = argc;
      control[FINISHED] = 0;
      control[FAILED] = 0;
      seq = (seq + 1) & 0x7fff;
      Atomics.store(control, NEXT, claimWord(seq, chunks.length));
      Atomics.store(control, SEQ, seq);
      Atomics.notify(control, SEQ);
      // Our chunks all run even when one throws, so afterwards only the helpers' are left to wait for.
      let failure: unknown;
      claimChunks(control, table, seq, exports[name], (err) => (failure ??= err), false);
      waitForChunks(chunks.length, name);
      Atomics.store(control, NEXT, CLOSED);
      if (failure !== undefined) throw failure;
      if (control[FAILED]) throw new Error(`wasm kernels: ${name} failed on a helper thread`);
    },
  };
}
