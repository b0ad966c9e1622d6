import { parseArgs } from 'node:util';

/** A bad command line: the demo prints the message on one line and exits with code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export type DemoMethod = 'compare' | 'co-tuning' | 'fine-tune';

/** Hyperparameters the demo passes through; anything unset takes the service default. */
export interface DemoHyperparameters {
  imageSize?: number;
  iterations?: number;
  epochs?: number;
  batchSize?: number;
  samplingRate?: number;
  lambda?: number;
}

export interface DemoArgs {
  help: boolean;
  /** Folder with model.json + weight shards; unset: the embedded demo model. */
  model?: string;
  /** Folder, CSV manifest or .zip/.tar.gz; unset: the embedded demo dataset. */
  data?: string;
  /** JSON array of source class names for --model. */
  classNames?: string;
  out: string;
  method: DemoMethod;
  seed: number;
  hyperparameters: DemoHyperparameters;
  /** Cache for the embedded assets. */
  assetsDir?: string;
}

export const DEMO_USAGE = `Usage: npm run demo -- [options]

Runs a Co-Tuning job end to end through the service: starts Redis (unless REDIS_URL is set),
the API and one worker, uploads a dataset and a pre-trained model, runs the job, follows its
progress, downloads the artifacts and prints fine-tune vs co-tuning accuracy.
Without --model/--data it uses an embedded default (synthetic shapes, generated on first run).

Options:
  --model DIR            TF.js layers model folder (model.json + weight shards)
  --class-names FILE     JSON array of the model's source class names (default: DIR/class-names.json if present)
  --data PATH            dataset folder (class/… or train|val|test/class/…), CSV manifest (path,label[,split])
                         or a .zip/.tar.gz archive of one
  --method NAME          compare (default), co-tuning or fine-tune
  --out DIR              where artifacts and logs go (default: ./demo-output)
  --seed N               run seed (default: 0)
  --image-size N         square input size (default: the model's)
  --iterations N         optimiser steps per method
  --epochs N             epochs per method (wins over --iterations)
  --batch-size N         batch size
  --sampling-rate R      fraction of each training class kept, in (0, 1]
  --lambda R             weight of the Co-Tuning term
  --assets-dir DIR       cache for the embedded default (default: node_modules/.cache/cotune-demo)
  -h, --help             show this help

Environment: REDIS_URL uses an existing Redis instead of starting a private redis-server.`;

const METHODS: readonly DemoMethod[] = ['compare', 'co-tuning', 'fine-tune'];

function integer(flag: string, raw: string | undefined, min: number, max = 2 ** 31 - 1): number | undefined {
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (!/^\s*\d+\s*$/.test(raw) || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new UsageError(`--${flag} must be an integer from ${min} to ${max} (got "${raw}")`);
  }
  return value;
}

function fraction(
  flag: string,
  raw: string | undefined,
  lowExclusive: number,
  high: number,
): number | undefined {
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(value) || value <= lowExclusive || value > high) {
    throw new UsageError(`--${flag} must be a number in (${lowExclusive}, ${high}] (got "${raw}")`);
  }
  return value;
}

function nonNegative(flag: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(value) || value < 0) {
    throw new UsageError(`--${flag} must be a number ≥ 0 (got "${raw}")`);
  }
  return value;
}

/** Parse the demo's command line; throws UsageError with a one-line message on anything wrong. */
export function parseDemoArgs(argv: readonly string[]): DemoArgs {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        help: { type: 'boolean', short: 'h' },
        model: { type: 'string' },
        'class-names': { type: 'string' },
        data: { type: 'string' },
        method: { type: 'string' },
        out: { type: 'string' },
        seed: { type: 'string' },
        'image-size': { type: 'string' },
        iterations: { type: 'string' },
        epochs: { type: 'string' },
        'batch-size': { type: 'string' },
        'sampling-rate': { type: 'string' },
        lambda: { type: 'string' },
        'assets-dir': { type: 'string' },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message.split('\n')[0]);
  }
  const v = parsed.values;
  const method = (v.method ?? 'compare') as DemoMethod;
  if (!METHODS.includes(method))
    throw new UsageError(`--method must be one of ${METHODS.join(', ')} (got "${v.method}")`);
  for (const flag of ['model', 'class-names', 'data', 'out', 'assets-dir'] as const) {
    if (v[flag] !== undefined && v[flag].trim() === '') throw new UsageError(`--${flag} needs a path`);
  }
  if (v['class-names'] !== undefined && v.model === undefined) {
    throw new UsageError('--class-names only applies together with --model');
  }
  const hyperparameters: DemoHyperparameters = {
    imageSize: integer('image-size', v['image-size'], 16, 1024),
    iterations: integer('iterations', v.iterations, 1),
    epochs: integer('epochs', v.epochs, 1),
    batchSize: integer('batch-size', v['batch-size'], 1, 4096),
    samplingRate: fraction('sampling-rate', v['sampling-rate'], 0, 1),
    lambda: nonNegative('lambda', v.lambda),
  };
  for (const key of Object.keys(hyperparameters) as (keyof DemoHyperparameters)[]) {
    if (hyperparameters[key] === undefined) delete hyperparameters[key];
  }
  return {
    help: v.help === true,
    model: v.model,
    data: v.data,
    classNames: v['class-names'],
    out: v.out ?? 'demo-output',
    method,
    seed: integer('seed', v.seed, 0) ?? 0,
    hyperparameters,
    assetsDir: v['assets-dir'],
  };
}
