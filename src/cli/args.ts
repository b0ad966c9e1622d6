import { parseArgs } from 'node:util';
import type { Hyperparameters } from '../cotuning/types.js';

/** A flag the user got wrong: printed as one line, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** Hyperparameter flags: --kebab-name ↔ Hyperparameters key, and how to parse the value. */
const HP_FLAGS: Record<string, { key: keyof Hyperparameters; kind: 'number' | 'string' | 'list' | 'bool' }> = {
  lambda: { key: 'lambda', kind: 'number' },
  'lr-backbone': { key: 'lrBackbone', kind: 'number' },
  'lr-source-head': { key: 'lrSourceHead', kind: 'number' },
  'lr-target-head': { key: 'lrTargetHead', kind: 'number' },
  momentum: { key: 'momentum', kind: 'number' },
  'weight-decay': { key: 'weightDecay', kind: 'number' },
  'batch-size': { key: 'batchSize', kind: 'number' },
  iterations: { key: 'iterations', kind: 'number' },
  epochs: { key: 'epochs', kind: 'number' },
  'lr-decay-at': { key: 'lrDecayAt', kind: 'list' },
  'lr-decay-factor': { key: 'lrDecayFactor', kind: 'number' },
  'image-size': { key: 'imageSize', kind: 'number' },
  'sampling-rate': { key: 'samplingRate', kind: 'number' },
  'val-fraction': { key: 'valFraction', kind: 'number' },
  relationship: { key: 'relationship', kind: 'string' },
  temperature: { key: 'temperature', kind: 'number' },
  'no-augment': { key: 'augment', kind: 'bool' },
  'crop-scale-min': { key: 'cropScaleMin', kind: 'number' },
  'freeze-below': { key: 'freezeBelow', kind: 'string' },
  'head-layer': { key: 'headLayer', kind: 'string' },
  'eval-every': { key: 'evalEvery', kind: 'number' },
};

export interface CliArgs {
  command: string;
  values: Record<string, string | boolean | undefined>;
  hyperparameters: Partial<Hyperparameters>;
}

/** A decimal number as people write one (1e-3, .5, -2); Number() alone would also take 0x10 and 0b1. */
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

function toNumber(flag: string, raw: string): number {
  const value = Number(raw);
  if (!DECIMAL.test(raw) || !Number.isFinite(value)) throw new UsageError(`--${flag} expects a number (got "${raw}")`);
  return value;
}

/** Parse `cotune <command> [flags]`; unknown flags and malformed values raise UsageError. */
export function parseCli(argv: string[]): CliArgs {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = {
    model: { type: 'string' },
    data: { type: 'string' },
    out: { type: 'string' },
    method: { type: 'string' },
    seed: { type: 'string' },
    'source-classes': { type: 'string' },
    cache: { type: 'string' },
    checkpoint: { type: 'string' },
    backend: { type: 'string' },
    threads: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
    quiet: { type: 'boolean', short: 'q' },
  };
  for (const [flag, spec] of Object.entries(HP_FLAGS)) options[flag] = { type: spec.kind === 'bool' ? 'boolean' : 'string' };
  // parseArgs reads "--lambda -3" as a missing value; a negative number after a value flag is its value.
  const args = argv.flatMap((arg, i) => {
    const name = arg.startsWith('--') && !arg.includes('=') ? arg.slice(2) : '';
    const next = argv[i + 1];
    if (name && options[name]?.type === 'string' && next !== undefined && /^-\d/.test(next)) return [`${arg}=${next}`];
    const previous = argv[i - 1] ?? '';
    const prevName = previous.startsWith('--') && !previous.includes('=') ? previous.slice(2) : '';
    return prevName && options[prevName]?.type === 'string' && /^-\d/.test(arg) ? [] : [arg];
  });
  let parsed;
  try {
    parsed = parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message.split('\n')[0]);
  }
  const [command = 'help', ...rest] = parsed.positionals;
  if (rest.length) throw new UsageError(`unexpected argument "${rest[0]}"`);
  const hyperparameters: Record<string, unknown> = {};
  for (const [flag, spec] of Object.entries(HP_FLAGS)) {
    const raw = parsed.values[flag];
    if (raw === undefined) continue;
    if (spec.kind === 'bool') hyperparameters[spec.key] = false;
    else if (spec.kind === 'number') hyperparameters[spec.key] = toNumber(flag, raw as string);
    else if (spec.kind === 'list') hyperparameters[spec.key] = (raw as string).split(',').map((v) => toNumber(flag, v));
    else hyperparameters[spec.key] = raw;
  }
  return { command, values: parsed.values as CliArgs['values'], hyperparameters: hyperparameters as Partial<Hyperparameters> };
}
