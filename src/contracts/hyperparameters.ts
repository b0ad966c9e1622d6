import { Type, type Static } from 'typebox';
import { NUMBER_RULES } from '../cotuning/hyperparameters.js';
import type { Hyperparameters as CoreHyperparameters } from '../cotuning/types.js';

/** A number schema with the core library's bounds for `name`, so the contract and the library agree. */
function bounded(name: keyof CoreHyperparameters, options: { description?: string } = {}) {
  const rule = NUMBER_RULES[name]!;
  const low = rule.minExclusive ? { exclusiveMinimum: rule.min } : { minimum: rule.min };
  return rule.integer ? Type.Integer({ ...low, maximum: rule.max, ...options }) : Type.Number({ ...low, maximum: rule.max, ...options });
}

/** Every tunable of the core library (src/cotuning/types.ts Hyperparameters), with bounds. */
const fields = {
  lambda: bounded('lambda', { description: 'λ: weight of the source-head (Co-Tuning) term; 0 = fine-tuning.' }),
  lrBackbone: bounded('lrBackbone'),
  lrSourceHead: bounded('lrSourceHead'),
  lrTargetHead: bounded('lrTargetHead'),
  momentum: bounded('momentum'),
  weightDecay: bounded('weightDecay'),
  batchSize: bounded('batchSize'),
  iterations: bounded('iterations', { description: 'Optimiser steps; `epochs` wins when set.' }),
  epochs: bounded('epochs'),
  lrDecayAt: Type.Array(Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 1 }), { maxItems: 16, description: 'Fractions of the run at which learning rates are multiplied by `lrDecayFactor`.' }),
  lrDecayFactor: bounded('lrDecayFactor'),
  imageSize: bounded('imageSize', { description: 'Square input size; default: the model input size.' }),
  samplingRate: bounded('samplingRate'),
  valFraction: bounded('valFraction'),
  relationship: Type.Union([Type.Literal('direct'), Type.Literal('reverse')]),
  temperature: bounded('temperature'),
  augment: Type.Boolean(),
  cropScaleMin: bounded('cropScaleMin'),
  freezeBelow: Type.String({ minLength: 1, maxLength: 200 }),
  headLayer: Type.String({ minLength: 1, maxLength: 200 }),
  evalEvery: bounded('evalEvery'),
};

const { epochs, imageSize, freezeBelow, headLayer, ...required } = fields;
const resolvedProps = {
  ...required,
  epochs: Type.Optional(epochs),
  imageSize: Type.Optional(imageSize),
  freezeBelow: Type.Optional(freezeBelow),
  headLayer: Type.Optional(headLayer),
};

/** Resolved hyperparameters (defaults applied), as returned with a job. Shape only: no $id. */
export const HyperparametersShape = Type.Object(resolvedProps, { additionalProperties: false });
export const Hyperparameters = Type.Object(resolvedProps, {
  $id: 'Hyperparameters',
  additionalProperties: false,
  description: 'All hyperparameters of a run, with defaults resolved.',
});
export type HyperparametersValue = Static<typeof HyperparametersShape>;

const partialProps = Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, Type.Optional(v)])) as {
  [K in keyof typeof fields]: ReturnType<typeof Type.Optional<(typeof fields)[K]>>;
};
export const HyperparametersInputShape = Type.Object(partialProps, { additionalProperties: false });
export const HyperparametersInput = Type.Object(partialProps, {
  $id: 'HyperparametersInput',
  additionalProperties: false,
  description: 'Hyperparameters to override; anything omitted takes the library default.',
});
export type HyperparametersInputValue = Static<typeof HyperparametersInputShape>;
export const HYPERPARAMETER_NAMES = Object.keys(fields);
