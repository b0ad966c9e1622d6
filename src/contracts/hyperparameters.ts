import { Type, type Static } from 'typebox';

/** Every tunable of the core library (src/cotuning/types.ts Hyperparameters), with bounds. */
const fields = {
  lambda: Type.Number({ minimum: 0, description: 'λ: weight of the source-head (Co-Tuning) term; 0 = fine-tuning.' }),
  lrBackbone: Type.Number({ exclusiveMinimum: 0 }),
  lrSourceHead: Type.Number({ minimum: 0 }),
  lrTargetHead: Type.Number({ exclusiveMinimum: 0 }),
  momentum: Type.Number({ minimum: 0, maximum: 1 }),
  weightDecay: Type.Number({ minimum: 0 }),
  batchSize: Type.Integer({ minimum: 1, maximum: 4096 }),
  iterations: Type.Integer({ minimum: 1, description: 'Optimiser steps; `epochs` wins when set.' }),
  epochs: Type.Integer({ minimum: 1 }),
  lrDecayAt: Type.Array(Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 1 }), { maxItems: 16, description: 'Fractions of the run at which learning rates are multiplied by `lrDecayFactor`.' }),
  lrDecayFactor: Type.Number({ exclusiveMinimum: 0, maximum: 1 }),
  imageSize: Type.Integer({ minimum: 8, maximum: 1024, description: 'Square input size; default: the model input size.' }),
  samplingRate: Type.Number({ exclusiveMinimum: 0, maximum: 1 }),
  valFraction: Type.Number({ minimum: 0, exclusiveMaximum: 1 }),
  relationship: Type.Union([Type.Literal('direct'), Type.Literal('reverse')]),
  temperature: Type.Number({ exclusiveMinimum: 0 }),
  augment: Type.Boolean(),
  cropScaleMin: Type.Number({ exclusiveMinimum: 0, maximum: 1 }),
  freezeBelow: Type.String({ minLength: 1, maxLength: 200 }),
  headLayer: Type.String({ minLength: 1, maxLength: 200 }),
  evalEvery: Type.Integer({ minimum: 1 }),
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
