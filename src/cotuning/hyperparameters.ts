import { InvalidInputError } from './errors.js';
import type { Hyperparameters } from './types.js';

/**
 * Defaults follow the reference Co-Tuning recipe (λ 2.3; lr 1e-3 backbone and source head,
 * 1e-2 target head; Nesterov momentum 0.9; weight decay 5e-4; ×0.1 after 60% of the steps),
 * with batch 32 and 600 steps sized for CPU machines.
 */
export const DEFAULT_HYPERPARAMETERS: Readonly<Hyperparameters> = Object.freeze({
  lambda: 2.3,
  lrBackbone: 1e-3,
  lrSourceHead: 1e-3,
  lrTargetHead: 1e-2,
  momentum: 0.9,
  weightDecay: 5e-4,
  batchSize: 32,
  iterations: 600,
  lrDecayAt: [0.6],
  lrDecayFactor: 0.1,
  samplingRate: 1,
  valFraction: 0.2,
  relationship: 'direct',
  temperature: 1,
  augment: true,
  cropScaleMin: 0.2,
  evalEvery: 10,
});

export type NumberRule = { min: number; max: number; integer?: boolean; minExclusive?: boolean };
/** Bounds of every numeric hyperparameter; the service's request schema is built from these. */
export const NUMBER_RULES: Readonly<Partial<Record<keyof Hyperparameters, NumberRule>>> = {
  lambda: { min: 0, max: 100 },
  lrBackbone: { min: 0, max: 10 },
  lrSourceHead: { min: 0, max: 10 },
  lrTargetHead: { min: 0, max: 10 },
  momentum: { min: 0, max: 0.999 },
  weightDecay: { min: 0, max: 1 },
  batchSize: { min: 1, max: 4096, integer: true },
  iterations: { min: 1, max: 10_000_000, integer: true },
  epochs: { min: 1, max: 100_000, integer: true },
  lrDecayFactor: { min: 0, max: 1, minExclusive: true },
  imageSize: { min: 16, max: 1024, integer: true },
  samplingRate: { min: 0, max: 1, minExclusive: true },
  valFraction: { min: 0, max: 0.9 },
  temperature: { min: 0, max: 100, minExclusive: true },
  cropScaleMin: { min: 0.01, max: 1 },
  evalEvery: { min: 1, max: 100_000, integer: true },
};

function checkNumber(field: string, value: unknown, rule: NumberRule): number {
  const where = `hyperparameters.${field}`;
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new InvalidInputError(where, `${where} must be a finite number`);
  if (rule.integer && !Number.isInteger(value)) throw new InvalidInputError(where, `${where} must be an integer`);
  const lowOk = rule.minExclusive ? value > rule.min : value >= rule.min;
  if (!lowOk || value > rule.max) {
    const low = rule.minExclusive ? `> ${rule.min}` : `≥ ${rule.min}`;
    throw new InvalidInputError(where, `${where} must be ${low} and ≤ ${rule.max} (got ${value})`);
  }
  return value;
}

/** Merge `partial` over the defaults and validate every field; errors name the field. */
export function resolveHyperparameters(partial: Partial<Hyperparameters> = {}): Hyperparameters {
  const known = new Set<string>([...Object.keys(DEFAULT_HYPERPARAMETERS), 'epochs', 'imageSize', 'freezeBelow', 'headLayer']);
  for (const key of Object.keys(partial)) {
    if (!known.has(key)) throw new InvalidInputError(`hyperparameters.${key}`, `hyperparameters.${key} is not a known hyperparameter`);
  }
  const merged: Hyperparameters = { ...DEFAULT_HYPERPARAMETERS, lrDecayAt: [...DEFAULT_HYPERPARAMETERS.lrDecayAt] };
  for (const [key, value] of Object.entries(partial) as [keyof Hyperparameters, unknown][]) {
    if (value === undefined) continue;
    const rule = NUMBER_RULES[key];
    if (rule) (merged as unknown as Record<string, unknown>)[key] = checkNumber(key, value, rule);
  }
  if (partial.lrDecayAt !== undefined) {
    const at = partial.lrDecayAt;
    if (!Array.isArray(at) || at.some((v) => typeof v !== 'number' || !(v > 0 && v < 1))) {
      throw new InvalidInputError('hyperparameters.lrDecayAt', 'hyperparameters.lrDecayAt must be a list of fractions in (0, 1)');
    }
    merged.lrDecayAt = [...at].sort((a, b) => a - b);
  }
  if (partial.relationship !== undefined) {
    if (partial.relationship !== 'direct' && partial.relationship !== 'reverse') {
      throw new InvalidInputError('hyperparameters.relationship', 'hyperparameters.relationship must be "direct" or "reverse"');
    }
    merged.relationship = partial.relationship;
  }
  if (partial.augment !== undefined) {
    if (typeof partial.augment !== 'boolean') throw new InvalidInputError('hyperparameters.augment', 'hyperparameters.augment must be a boolean');
    merged.augment = partial.augment;
  }
  for (const key of ['freezeBelow', 'headLayer'] as const) {
    const value = partial[key];
    if (value === undefined) continue;
    // Length in code points, as the API's JSON schema counts it (maxLength 200).
    if (typeof value !== 'string' || value.length === 0 || [...value].length > 200) {
      throw new InvalidInputError(`hyperparameters.${key}`, `hyperparameters.${key} must be a layer name of 1 to 200 characters`);
    }
    merged[key] = value;
  }
  if (merged.relationship === 'reverse' && merged.valFraction === 0) {
    throw new InvalidInputError('hyperparameters.valFraction', 'the reverse relationship needs a validation split: valFraction must be > 0');
  }
  return merged;
}
