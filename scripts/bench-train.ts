/**
 * Training-throughput benchmark on the real shared MobileNet v1 0.25 (see USAGE).
 *
 * Measures, per input size: inference (backbone + target head), the relationship pass (the
 * library's: backbone + source head in inference mode, then softmax rows), and its training step
 * (train.ts trainStep): fine-tune, co-tuning, and fine-tune with the lower backbone frozen.
 * Times are medians over --steps rounds (default 20; --walls prints every round's); the target
 * ratios are medians of the per-round ratios. `--stock` skips registerFastGradients (WASM then cannot train).
 * `--profile` prints the kernels of one fine-tune and one co-tuning step. CPU time used by
 * other processes during each measurement is printed as "others" (in cores) because the
 * machine is shared.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { getThreadsCount } from '@tensorflow/tfjs-backend-wasm';
import { registerFastGradients } from '../src/cotuning/backend/gradients.js';
import { fusedMultiplyAddSetting } from '../src/cotuning/backend/wasm-fma.js';
import { wasmKernels } from '../src/cotuning/backend/wasm-kernels.js';
import { MAX_WASM_THREADS, defaultWasmThreads, setWasmBackend } from '../src/cotuning/backend/wasm-threads.js';
import { DEFAULT_HYPERPARAMETERS } from '../src/cotuning/hyperparameters.js';
import { loadLayersModel } from '../src/cotuning/model-io.js';
import { buildNet, disposeNet, features, sourceLogits, targetLogits, trainableGroups, type CoTuningNet } from '../src/cotuning/network.js';
import { softmaxRows } from '../src/cotuning/relationship.js';
import { NesterovSgd } from '../src/cotuning/optimizer.js';
import { trainStep } from '../src/cotuning/train.js';

const DEFAULT_MODEL_DIR =
  process.env.COTUNE_SHARED_DATA !== undefined
    ? `${process.env.COTUNE_SHARED_DATA}/mobilenet_v1_0.25_224`
    : new URL('../../shared/data/mobilenet_v1_0.25_224', import.meta.url).pathname;
const HEAD_LAYER = 'conv_preds';
/** Partial fine-tuning: the first six depthwise-separable blocks frozen. */
const FREEZE_BELOW = 'conv_dw_7';
const TARGET_CLASSES = 100;
const LAMBDA = DEFAULT_HYPERPARAMETERS.lambda;
/** MobileNet needs 32 px to keep one pixel after its five stride-2 layers; 512 px is 5x the work of 224. */
const [MIN_SIZE, MAX_SIZE] = [32, 512];
/** Fewer rounds give no 95 % confidence interval of a median (6: min to max covers 96.9 %). */
const MIN_ROUNDS = 6;

const USAGE = `Usage: npm run bench:train -- [options]

  --model DIR        the shared MobileNet v1 0.25 (default: $COTUNE_SHARED_DATA/mobilenet_v1_0.25_224,
                     else ../shared/data/mobilenet_v1_0.25_224 next to the repository)
  --sizes LIST       input sizes in px, comma-separated, each ${MIN_SIZE}-${MAX_SIZE} (default 96,128,224)
  --steps N          timed rounds per size, ${MIN_ROUNDS}-1000 (default 20)
  --batch N          images per step, 1-256 (default 32)
  --backend NAME     wasm or cpu (default $COTUNE_TF_BACKEND, else wasm)
  --threads N        XNNPACK threads of the WASM backend, 1-${MAX_WASM_THREADS} (default $COTUNE_WASM_THREADS, else ${defaultWasmThreads()} here)
  --json PATH        also write the rows as a JSON array
  --profile          list the kernels of one fine-tune and one co-tuning step per size
  --walls            print every round's time
  --stock            without our gradients and kernels (WASM then cannot train)
  -h, --help         this text
`;

/** A bad option: one line and exit code 2, as the cotune command does. */
class UsageError extends Error {}

/** `name` is the flag, or the environment variable the default came from. */
function integerOption(name: string, value: string, min: number, max: number): number {
  if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) throw new UsageError(`${name} ${JSON.stringify(value)}: a whole number from ${min} to ${max}`);
  return Number(value);
}

/** A flag's value, else a non-blank environment variable's (as the service reads it), else the default; with where it came from. */
function flagOrEnv(value: string | undefined, flag: string, variable: string, fallback: string): [value: string, source: string] {
  if (value !== undefined) return [value, flag];
  const env = process.env[variable]?.trim();
  return env ? [env, variable] : [fallback, 'default'];
}

function readOptions() {
  const { values } = parseArgs({
    options: {
      model: { type: 'string', default: DEFAULT_MODEL_DIR },
      backend: { type: 'string' },
      threads: { type: 'string' },
      sizes: { type: 'string', default: '96,128,224' },
      batch: { type: 'string', default: '32' },
      steps: { type: 'string', default: '20' },
      json: { type: 'string' },
      profile: { type: 'boolean', default: false },
      walls: { type: 'boolean', default: false },
      stock: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const [backend, backendSource] = flagOrEnv(values.backend, '--backend', 'COTUNE_TF_BACKEND', 'wasm');
  if (backend !== 'wasm' && backend !== 'cpu') throw new UsageError(`${backendSource} ${JSON.stringify(backend)}: wasm or cpu`);
  const [threads, threadsSource] = flagOrEnv(values.threads, '--threads', 'COTUNE_WASM_THREADS', String(defaultWasmThreads()));
  // The kernels read it when they load; checked here so that a typo is a usage error, as in the service.
  try {
    fusedMultiplyAddSetting();
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.json !== undefined) {
    // Written now so that a path that cannot be written fails before minutes of measuring.
    try {
      writeFileSync(values.json, '[]');
    } catch (err) {
      throw new UsageError(`--json ${JSON.stringify(values.json)}: cannot write there (${(err as Error).message})`);
    }
  }
  if (!existsSync(join(values.model, 'model.json'))) {
    throw new UsageError(`--model ${values.model}: no model.json there (give --model DIR or set COTUNE_SHARED_DATA to the shared data folder)`);
  }
  const sizes = values.sizes.split(',').map((size) => integerOption('--sizes', size.trim(), MIN_SIZE, MAX_SIZE));
  if (new Set(sizes).size !== sizes.length) throw new UsageError(`--sizes ${JSON.stringify(values.sizes)}: each size once`);
  return {
    ...values,
    backend,
    threads: integerOption(threadsSource, threads, 1, MAX_WASM_THREADS),
    sizes,
    batch: integerOption('--batch', values.batch, 1, 256),
    steps: integerOption('--steps', values.steps, MIN_ROUNDS, 1000),
  };
}

interface Row {
  backend: string;
  threads: number;
  model: string;
  inputSize: number;
  batch: number;
  inferImgPerSec: number;
  relationshipImgPerSec: number;
  fineTuneImgPerSec: number;
  coTuneImgPerSec: number;
  gflops: number;
  peakRssMb: number;
}

/** Busy and total jiffies of the whole machine, from /proc/stat. */
function machineJiffies(): { busy: number; total: number } {
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = cpu[3] + cpu[4];
  const total = cpu.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

interface Timing {
  /** Median wall seconds per call. */
  sec: number;
  /** Wall seconds per call in each round, in round order. */
  walls: number[];
  /** Mean CPU seconds of this process per call (robust to other processes on the shared cores). */
  cpu: number;
  /** Cores used by other processes while this workload ran. */
  others: number;
}

/** Timed calls per workload and round; each block also starts with one untimed call. */
const CALLS_PER_BLOCK = 2;

/**
 * Times several workloads round-robin, one block of calls of each per round, so that changing
 * load from other processes hits them alike. A block starts with an untimed call because the
 * first call after another workload pays for that workload's garbage (collected then: a few
 * percent after a training step), which would otherwise bias the ratios by the order of the
 * workloads; the order also alternates between rounds. One warm-up call each first (XNNPACK
 * operator creation, weight packing, heap growth, optimiser state). Also returns the
 * tensor-count change over the timed rounds, which must be 0.
 */
function timeAll(fns: (() => void)[], rounds: number): { timings: Timing[]; tensorDelta: number } {
  for (const fn of fns) fn();
  const tensors = tf.memory().numTensors;
  const walls = fns.map((): number[] => []);
  const cpus = fns.map(() => 0);
  const busy = fns.map(() => 0);
  const hz = 100; // USER_HZ of /proc/stat
  for (let r = 0; r < rounds; r++) {
    const order = fns.map((_, i) => (r % 2 === 0 ? i : fns.length - 1 - i));
    for (const i of order) {
      fns[i]();
      const j0 = machineJiffies();
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      for (let k = 0; k < CALLS_PER_BLOCK; k++) fns[i]();
      const wall = (performance.now() - t0) / 1000 / CALLS_PER_BLOCK;
      const c1 = process.cpuUsage(c0);
      const own = (c1.user + c1.system) / 1e6 / CALLS_PER_BLOCK;
      walls[i].push(wall);
      cpus[i] += own;
      busy[i] += Math.max(0, (machineJiffies().busy - j0.busy) / hz / CALLS_PER_BLOCK - own);
    }
  }
  const timings = fns.map((_, i) => {
    const sorted = [...walls[i]].sort((a, b) => a - b);
    const total = walls[i].reduce((a, b) => a + b, 0);
    return { sec: sorted[Math.floor(sorted.length / 2)], walls: walls[i], cpu: cpus[i] / rounds, others: busy[i] / total };
  });
  return { timings, tensorDelta: tf.memory().numTensors - tensors };
}

/**
 * How many of n sorted values to leave out at each end for a 95 % confidence interval of their
 * median. With t left out, [x(t+1), x(n−t)] (1-based) misses the median when at most t values
 * fall on one side of it, with probability 2·P(Binomial(n, ½) ≤ t): t is the largest count
 * with P(Binomial(n, ½) ≤ t) ≤ 2.5 % (exact, not the normal approximation; 20 values: t = 5,
 * 95.9 %). Below 6 values not even the whole range covers 95 %.
 */
function medianTrim(n: number): number {
  let term = 0.5 ** n; // P(Binomial(n, ½) = k)
  let atMost = term; // P(Binomial(n, ½) ≤ k)
  let k = 0;
  while (atMost <= 0.025) {
    term *= (n - k) / (k + 1);
    k++;
    atMost += term;
  }
  // P(≤ k − 1) ≤ 2.5 % < P(≤ k).
  return Math.max(0, k - 1);
}

/**
 * Median over rounds of a's time / b's time in the same round: the two blocks ran close
 * together, so the ratio holds while the machine's speed drifts (shared cores, clock changes).
 * Also a 95 % confidence interval of that median, so a reader can tell a miss from noise.
 */
function pairedRatio(a: Timing, b: Timing): { median: number; low: number; high: number } {
  const ratios = a.walls.map((w, r) => w / b.walls[r]).sort((p, q) => p - q);
  const n = ratios.length;
  const mid = n >> 1;
  const trim = medianTrim(n);
  return { median: n % 2 === 1 ? ratios[mid] : (ratios[mid - 1] + ratios[mid]) / 2, low: ratios[trim], high: ratios[n - 1 - trim] };
}

/** The targets of the three ratios: each ratio's median must not exceed its bound. */
const TARGETS = { 'ft/infer': 4, 'ct/ft': 1.03, 'rel/infer': 1.1 } as const;
type Target = keyof typeof TARGETS;

/** Where the paired ratios of each size stand against the targets. */
interface Verdicts {
  /** The interval lies above the target: a miss beyond this run's noise. */
  missed: string[];
  /** The median is above the target but the interval reaches below it. */
  withinNoise: string[];
}

/**
 * A ratio as "median (low–high) mark": ✓ when the median meets the target, ≈ when only the
 * confidence interval reaches it, ✗ when the whole interval lies above it.
 */
function showRatio(target: Target, a: Timing, b: Timing, digits: number, verdicts: Verdicts, size: number): string {
  const { median, low, high } = pairedRatio(a, b);
  const bound = TARGETS[target];
  const what = `${size} px ${target} ${median.toFixed(digits)} (${low.toFixed(digits)}–${high.toFixed(digits)}) > ${bound}`;
  if (low > bound) verdicts.missed.push(what);
  else if (median > bound) verdicts.withinNoise.push(what);
  const mark = median <= bound ? '✓' : low <= bound ? '≈' : '✗';
  return `${median.toFixed(digits)} (${low.toFixed(digits)}–${high.toFixed(digits)}) ${mark}`;
}

/**
 * a's and b's time at the same low quantile of their rounds (the fastest quarter by default).
 * Interference from other processes only ever slows a call down, so the fast rounds are the
 * least disturbed: a second estimate of the ratio, steadier than the paired median on a busy host.
 */
function quantileRatio(a: Timing, b: Timing, q = 0.25): number {
  const at = (t: Timing): number => [...t.walls].sort((p, r) => p - r)[Math.floor(q * (t.walls.length - 1))];
  return at(a) / at(b);
}

/** Multiply-accumulates per image of the backbone (+ dense heads), from the built layers. */
function countMacs(model: tf.LayersModel, denseOut: number): number {
  let macs = 0;
  for (const layer of model.layers) {
    const cls = layer.getClassName();
    const out = layer.outputShape as number[];
    const cfg = layer.getConfig() as { kernelSize?: number[]; depthMultiplier?: number };
    const inShape = layer.inputSpec?.[0]?.shape ?? (layer.input as tf.SymbolicTensor).shape;
    const cin = inShape[inShape.length - 1] as number;
    if (cls === 'Conv2D' && layer.name !== HEAD_LAYER) {
      macs += out[1] * out[2] * out[3] * cin * (cfg.kernelSize ?? [1, 1]).reduce((a, b) => a * b, 1);
    } else if (cls === 'DepthwiseConv2D') {
      macs += out[1] * out[2] * out[3] * (cfg.kernelSize ?? [1, 1]).reduce((a, b) => a * b, 1);
    }
  }
  return macs + 256 * denseOut;
}

/** The library's own training step (train.ts) on its own two-head network (network.ts). */
function makeStep(
  net: CoTuningNet,
  lambda: number,
  freezeBelow?: string,
): (x: tf.Tensor4D, labels: tf.Tensor1D, soft: tf.Tensor2D) => void {
  const hp = DEFAULT_HYPERPARAMETERS;
  const groups = trainableGroups(net, lambda > 0, freezeBelow);
  const optimizer = new NesterovSgd(hp.momentum, hp.weightDecay);
  const lrs = { backbone: hp.lrBackbone, sourceHead: hp.lrSourceHead, targetHead: hp.lrTargetHead };
  return (x, labels, soft) => {
    trainStep(net, optimizer, groups, { x, labels, softTargets: lambda > 0 ? soft : null }, lambda, lrs);
  };
}

function kernelProfile(fn: () => void): Promise<void> {
  return tf.profile(fn).then((info) => {
    const byName = new Map<string, { n: number; ms: number }>();
    for (const k of info.kernels) {
      const e = byName.get(k.name) ?? { n: 0, ms: 0 };
      e.n += 1;
      e.ms += typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
      byName.set(k.name, e);
    }
    const rows = [...byName.entries()].sort((a, b) => b[1].ms - a[1].ms);
    console.log(`kernels per step: ${info.kernels.length}`);
    for (const [name, e] of rows.slice(0, 25)) console.log(`  ${name.padEnd(40)} ${String(e.n).padStart(5)}  ${e.ms.toFixed(1)} ms`);
    const calls = info.kernels
      .filter((k) => typeof k.kernelTimeMs === 'number')
      .sort((a, b) => (b.kernelTimeMs as number) - (a.kernelTimeMs as number));
    console.log('slowest calls (input shapes):');
    for (const k of calls.slice(0, 25)) {
      console.log(`  ${k.name.padEnd(40)} ${(k.kernelTimeMs as number).toFixed(1).padStart(6)} ms  ${JSON.stringify(k.inputShapes)}`);
    }
  });
}

async function main(): Promise<void> {
  const args = readOptions();
  const { backend, threads, batch, steps } = args;
  // WASM goes through the same threaded start-up as the service (selectBackend).
  if (!(await (backend === 'wasm' ? setWasmBackend(threads) : tf.setBackend(backend)))) throw new Error(`backend ${backend} unavailable`);
  await tf.ready();
  if (!args.stock) await registerFastGradients(backend);
  const rows: Row[] = [];
  const table: string[] = [];
  const verdicts: Verdicts = { missed: [], withinNoise: [] };
  for (const size of args.sizes) {
    const net = await buildNet(args.model, { numClasses: TARGET_CLASSES, imageSize: size, seed: 1 });
    const full = await loadLayersModel(args.model, size);
    const x = tf.randomUniform([batch, size, size, 3], -1, 1, 'float32', 7) as tf.Tensor4D;
    const yT = tf.randomUniform([batch], 0, TARGET_CLASSES, 'int32', 8) as tf.Tensor1D;
    const ySoft = tf.softmax(tf.randomNormal([batch, 1000], 0, 1, 'float32', 9)) as tf.Tensor2D;
    const infer = (): void => {
      const p = tf.tidy(() => targetLogits(net, features(net, x, false)));
      p.dataSync();
      p.dispose();
    };
    // As run.ts estimates the relationship: the untouched source head in inference mode, then
    // row-wise softmax (evaluate.ts predictLogits + relationship.ts softmaxRows).
    const relationship = (): void => {
      const p = tf.tidy(() => sourceLogits(net, features(net, x, false)));
      softmaxRows(p.dataSync() as Float32Array, batch, p.shape[1] as number);
      p.dispose();
    };
    const fineStep = makeStep(net, 0);
    const coStep = makeStep(net, LAMBDA);
    const partialStep = makeStep(net, 0, FREEZE_BELOW);
    const sync = (): void => {
      // Reading one weight waits for the step (WASM runs synchronously, this keeps other backends honest).
      net.targetBias.dataSync();
    };
    if (args.profile) {
      for (const [label, step] of [['fine-tune', fineStep], ['co-tuning', coStep]] as const) {
        step(x, yT, ySoft); // warm-up, so the profile shows steady-state kernels
        console.log(`${label} step at ${size} px:`);
        await kernelProfile(() => step(x, yT, ySoft));
      }
    }
    const { timings, tensorDelta: leak } = timeAll(
      [
        infer,
        relationship,
        () => (fineStep(x, yT, ySoft), sync()),
        () => (coStep(x, yT, ySoft), sync()),
        () => (partialStep(x, yT, ySoft), sync()),
      ],
      steps,
    );
    const [inf, rel, ft, ct, pt] = timings;
    if (args.walls) {
      ['infer', 'rel', 'ft', 'ct', 'frozen'].forEach((name, i) =>
        console.log(`${size} px ${name} ms per round: ${timings[i].walls.map((w) => (w * 1000).toFixed(1)).join(' ')}`),
      );
    }
    const macs = countMacs(full, TARGET_CLASSES);
    const row: Row = {
      backend,
      threads: backend === 'wasm' ? getThreadsCount() : 1,
      model: 'mobilenet_v1_0.25_224',
      inputSize: size,
      batch,
      inferImgPerSec: batch / inf.sec,
      relationshipImgPerSec: batch / rel.sec,
      fineTuneImgPerSec: batch / ft.sec,
      coTuneImgPerSec: batch / ct.sec,
      gflops: (6 * macs * batch) / ft.sec / 1e9,
      peakRssMb: process.resourceUsage().maxRSS / 1024,
    };
    rows.push(row);
    const others = Math.max(inf.others, rel.others, ft.others, ct.others, pt.others);
    table.push(
      [
        size,
        (inf.sec * 1000).toFixed(1),
        (rel.sec * 1000).toFixed(1),
        (ft.sec * 1000).toFixed(1),
        (ct.sec * 1000).toFixed(1),
        (pt.sec * 1000).toFixed(1),
        row.inferImgPerSec.toFixed(0),
        row.fineTuneImgPerSec.toFixed(1),
        row.gflops.toFixed(2),
        showRatio('ft/infer', ft, inf, 2, verdicts, size),
        showRatio('ct/ft', ct, ft, 3, verdicts, size),
        showRatio('rel/infer', rel, inf, 3, verdicts, size),
        [inf, rel, ft, ct, pt].map((t) => (t.cpu * 1000).toFixed(0)).join('/'),
        `${(ft.cpu / inf.cpu).toFixed(2)}/${(ct.cpu / ft.cpu).toFixed(3)}/${(rel.cpu / inf.cpu).toFixed(3)}`,
        `${quantileRatio(ft, inf).toFixed(2)}/${quantileRatio(ct, ft).toFixed(3)}/${quantileRatio(rel, inf).toFixed(3)}`,
        others.toFixed(2),
        row.peakRssMb.toFixed(0),
        leak,
      ].join('\t'),
    );
    tf.dispose([x, yT, ySoft]);
    disposeNet(net);
    full.dispose();
  }
  const fma = wasmKernels(tf.backend())?.fusedMultiplyAdd() ?? false;
  console.log(
    `backend=${backend} threads=${backend === 'wasm' ? getThreadsCount() : 1} batch=${batch} fastGradients=${!args.stock} fusedMultiplyAdd=${fma} loadavg=${readFileSync('/proc/loadavg', 'utf8').trim()}`,
  );
  console.log(
    `ratios: median over ${steps} rounds of the per-round ratio (95 % confidence interval of that median); against the target (≤x): ✓ median within, ≈ interval reaches it, ✗ interval above it`,
  );
  console.log(
    `size\tinfer ms\trel ms\tft ms\tct ms\tft freezeBelow=${FREEZE_BELOW} ms\tinfer img/s\tft img/s\tGFLOP/s\t${(Object.keys(TARGETS) as Target[]).map((t) => `${t} (≤${TARGETS[t]})`).join('\t')}\tCPU ms infer/rel/ft/ct/frozen\tsame ratios by CPU time\tsame ratios of the fastest quarters\tothers\trss MB\tΔtensors`,
  );
  for (const line of table) console.log(line);
  const { missed, withinNoise } = verdicts;
  if (missed.length + withinNoise.length === 0) console.log('targets: all met');
  if (withinNoise.length > 0) console.log(`targets met only within this run's noise (more --steps narrow the interval): ${withinNoise.join('; ')}`);
  if (missed.length > 0) console.log(`targets missed: ${missed.join('; ')}`);
  if (args.json) writeFileSync(args.json, JSON.stringify(rows, null, 2));
  if (backend === 'wasm') tf.removeBackend('wasm');
}

try {
  await main();
} catch (err) {
  // One line, not Node's report (which quotes the source line: here a minified bundle).
  const usage = err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
  console.error(`bench:train: ${(err as Error).message}${usage ? ' (see --help)' : ''}`);
  process.exit(usage ? 2 : 1);
}
