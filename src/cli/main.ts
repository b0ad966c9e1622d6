import { constants } from 'node:fs';
import { access, mkdir, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { BACKEND_PREFERENCE, InvalidInputError, MAX_WASM_THREADS, defaultWasmThreads, fusedMultiplyAddSetting, resolveHyperparameters, runJob, runRelationship, type RunResult } from '../cotuning/index.js';
import { MAX_SEED } from '../contracts/jobs.js';
import { parseCli, UsageError, type CliArgs } from './args.js';
import { createProgressPrinter } from './progress.js';

const HELP = `cotune — Co-Tuning transfer learning on TensorFlow.js

Usage:
  cotune relationship --model DIR --data PATH --out DIR [flags]
  cotune train --method co-tuning|fine-tune --model DIR --data PATH --out DIR [flags]
  cotune compare --model DIR --data PATH --out DIR [flags]

Inputs:
  --model DIR            TF.js LayersModel folder (model.json + weight files) of a pre-trained classifier
  --data PATH            image folders (root/<class>/*), split folders (root/train|val|test/<class>/*)
                         or a CSV manifest (path,label[,split], paths relative to the CSV)
  --out DIR              output folder for the model, relationship, metrics and plots
  --source-classes FILE  JSON array of source class names (e.g. ImageNet) for labels
  --seed N               seed for splits, sampling, augmentation and initialisation (default 0)
  --cache DIR            relationship cache folder (default: <out>/.cache)
  --checkpoint DIR       checkpoint folder; a run resumes from it when it holds a checkpoint
  --backend NAME         force tensorflow-gpu, tensorflow, wasm or cpu (default: fastest available;
                         also COTUNE_TF_BACKEND)
  --threads N            XNNPACK threads of the WASM backend, 1-${MAX_WASM_THREADS} (default ${defaultWasmThreads()} here; also COTUNE_WASM_THREADS)
  -q, --quiet            no progress output

Hyperparameters (defaults in parentheses):
  --lambda (2.3) --lr-backbone (1e-3) --lr-source-head (1e-3) --lr-target-head (1e-2)
  --momentum (0.9) --weight-decay (5e-4) --batch-size (32) --iterations (600) --epochs
  --lr-decay-at (0.6, comma list of fractions) --lr-decay-factor (0.1) --image-size (model's)
  --sampling-rate (1) --val-fraction (0.2) --relationship direct|reverse (direct)
  --temperature (1) --no-augment --crop-scale-min (0.2) --head-layer LAYER
  --eval-every (10 validation passes)
  --freeze-below LAYER   train only the backbone from LAYER on; the layers before it run in
                         inference mode without gradients (LAYER must start a block, e.g. conv_dw_7)

Exit codes: 0 success, 1 failure, 2 bad flags or unreadable input, 130 interrupted.
`;

function requireFlag(args: CliArgs, name: string): string {
  const value = args.values[name];
  if (typeof value !== 'string' || value === '') throw new UsageError(`--${name} is required (see cotune --help)`);
  return value;
}

async function checkReadable(path: string, flag: string, kind: 'dir' | 'any'): Promise<void> {
  try {
    await access(path);
    if (kind === 'dir' && !(await stat(path)).isDirectory()) throw new Error();
  } catch {
    throw new UsageError(`--${flag} ${path}: ${kind === 'dir' ? 'not a readable folder' : 'not readable'}`);
  }
}

function pct(v: number): string {
  return `${(v * 100).toFixed(2)}%`;
}

function printTable(result: RunResult): void {
  const rows = result.results.map((r) => [r.method, pct(r.test.top1), pct(r.test.top5), pct(r.bestValTop1), `${r.seconds.toFixed(0)} s`]);
  const header = ['method', 'test top-1', 'test top-5', 'best val top-1', 'time'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join('  ');
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const row of rows) console.log(line(row));
  if (result.gain !== undefined) console.log(`gain (co-tuning − fine-tune, top-1): ${result.gain >= 0 ? '+' : ''}${(result.gain * 100).toFixed(2)} points`);
  console.log(`backend ${result.backend}; total ${result.seconds.toFixed(0)} s; artifacts in ${result.outDir}`);
}

async function main(argv: string[]): Promise<number> {
  const args = parseCli(argv);
  if (args.values.help || args.command === 'help') {
    process.stdout.write(HELP);
    return 0;
  }
  if (!['relationship', 'train', 'compare'].includes(args.command)) throw new UsageError(`unknown command "${args.command}" (see cotune --help)`);
  let modelDir = resolve(requireFlag(args, 'model'));
  // Accept the model.json file itself as well as its folder.
  if (basename(modelDir) === 'model.json') modelDir = dirname(modelDir);
  const dataPath = resolve(requireFlag(args, 'data'));
  const outDir = resolve(requireFlag(args, 'out'));
  await checkReadable(join(modelDir, 'model.json'), 'model', 'any');
  await checkReadable(dataPath, 'data', 'any');
  const backend = (args.values.backend as string | undefined) ?? process.env.COTUNE_TF_BACKEND;
  if (backend && !(BACKEND_PREFERENCE as readonly string[]).includes(backend)) {
    const source = args.values.backend !== undefined ? '--backend' : 'COTUNE_TF_BACKEND';
    throw new UsageError(`${source} must be one of ${BACKEND_PREFERENCE.join(', ')} (got "${backend}")`);
  }
  // Checked here for every backend, as the service checks it at start-up (the kernels read it later).
  try {
    fusedMultiplyAddSetting();
  } catch {
    throw new UsageError(`COTUNE_WASM_FMA must be 0, 1 or empty (got "${process.env.COTUNE_WASM_FMA}")`);
  }
  const threadsRaw = (args.values.threads as string | undefined) ?? (process.env.COTUNE_WASM_THREADS || String(defaultWasmThreads()));
  const wasmThreads = /^[0-9]+$/.test(threadsRaw) ? Number(threadsRaw) : NaN;
  if (!Number.isInteger(wasmThreads) || wasmThreads < 1 || wasmThreads > MAX_WASM_THREADS) {
    const source = args.values.threads !== undefined ? '--threads' : 'COTUNE_WASM_THREADS';
    throw new UsageError(`${source} expects an integer from 1 to ${MAX_WASM_THREADS} (got "${threadsRaw}")`);
  }
  const seedRaw = (args.values.seed as string | undefined) ?? '0';
  const seed = Number(seedRaw);
  // Digits only, and within the API's range, so that a run can be repeated as a job.
  if (!/^\d+$/.test(seedRaw) || seed > MAX_SEED) throw new UsageError(`--seed expects a whole number from 0 to ${MAX_SEED} (got "${seedRaw}")`);
  if (args.command === 'train' && args.values.method === undefined) throw new UsageError('--method is required for train: co-tuning or fine-tune');
  let method = args.command === 'compare' ? 'compare' : ((args.values.method as string | undefined) ?? 'co-tuning');
  if (args.command === 'train' && method !== 'co-tuning' && method !== 'fine-tune') throw new UsageError(`--method must be co-tuning or fine-tune (got "${method}")`);
  if (args.command === 'relationship') method = 'co-tuning';
  resolveHyperparameters(args.hyperparameters);
  const sourceClassNamesPath = args.values['source-classes'] as string | undefined;
  if (sourceClassNamesPath) await checkReadable(sourceClassNamesPath, 'source-classes', 'any');
  // Last of the checks, so that a bad flag leaves no folder behind; before training, not after.
  try {
    await mkdir(outDir, { recursive: true });
    await access(outDir, constants.W_OK);
  } catch {
    throw new UsageError(`--out ${outDir}: cannot create or write this folder`);
  }

  const controller = new AbortController();
  process.once('SIGINT', () => controller.abort('interrupted'));
  const printer = args.values.quiet ? null : createProgressPrinter(process.stderr);
  const hooks = {
    signal: controller.signal,
    onProgress: printer ? (p: Parameters<typeof printer.update>[0]) => printer.update(p) : undefined,
    log: args.values.quiet ? undefined : (m: string) => process.stderr.write(`${m}\n`),
  };
  const common = {
    modelDir,
    dataPath,
    outDir,
    seed,
    hyperparameters: args.hyperparameters,
    sourceClassNamesPath,
    cacheDir: (args.values.cache as string | undefined) ?? join(outDir, '.cache'),
    checkpointDir: args.values.checkpoint as string | undefined,
    backend: backend || undefined,
    wasmThreads,
  };
  try {
    if (args.command === 'relationship') {
      const r = await runRelationship(common, hooks);
      printer?.done();
      console.log(`relationship written to ${r.outDir} (${r.artifacts.join(', ')})${r.fromCache ? ' from cache' : ''}; backend ${r.backend}; ${r.seconds.toFixed(1)} s`);
      return 0;
    }
    const result = await runJob({ ...common, method: method as 'compare' }, hooks);
    printer?.done();
    printTable(result);
    return 0;
  } catch (err) {
    printer?.done();
    if ((err as Error).name === 'AbortError') {
      console.error('cotune: interrupted');
      return 130;
    }
    throw err;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: Error) => {
    if (err instanceof UsageError || err instanceof InvalidInputError) {
      console.error(`cotune: ${err.message.split('\n')[0]}`);
      process.exit(2);
    }
    console.error(`cotune: ${err.message}`);
    process.exit(1);
  },
);

