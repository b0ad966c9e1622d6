import { createHash } from 'node:crypto';
import * as tf from '@tensorflow/tfjs';
import { loadCheckpoint, saveCheckpoint } from './checkpoint.js';
import { throwIfAborted } from './errors.js';
import { predictLogits, top1Accuracy } from './evaluate.js';
import { trainBatch, type ImageSet, type Normalization } from './images.js';
import { coTuningLoss } from './loss.js';
import {
  frozenFeatures,
  restore,
  snapshot,
  sourceLogits,
  stateVariables,
  targetLogits,
  trainableGroups,
  trainingFeatures,
  type CoTuningNet,
  type VariableGroups,
} from './network.js';
import { NesterovSgd } from './optimizer.js';
import { createRng, deriveSeed, shuffle } from './rng.js';
import type { Hyperparameters, Progress, RunHooks, TrainMethod } from './types.js';

/** Training stops with an error when the loss exceeds this multiple of its first value. */
const DIVERGENCE_FACTOR = 1000;

/** `epoch` is fractional: images seen / training-set size. */
export interface EpochCurve {
  epoch: number;
  step: number;
  loss: number;
  lossTarget: number;
  lossSource: number;
  lr: number;
}
export interface ValCurve {
  epoch: number;
  step: number;
  valTop1: number;
}
export interface TrainCurves {
  epochs: EpochCurve[];
  validation: ValCurve[];
}

export interface TrainResult {
  steps: number;
  bestValTop1: number;
  /** Step whose weights were kept (selected on validation); the net holds them on return. */
  bestStep: number;
  curves: TrainCurves;
  seconds: number;
  imagesPerSec: number;
  resumedFromStep: number;
}

export interface TrainSetup {
  net: CoTuningNet;
  method: TrainMethod;
  hp: Hyperparameters;
  seed: number;
  train: ImageSet;
  val: ImageSet;
  /** R [C × S] for co-tuning; ignored by fine-tune. */
  relationship: Float32Array | null;
  normalization: Normalization;
  /** Checkpoint folder for this method; resumed from when it holds a matching checkpoint. */
  checkpointDir?: string;
  /** Identifies everything the run depends on (data plan, weights, relationship) for checkpoint matching. */
  fingerprint: string;
  hooks: RunHooks;
  /** Maps this training's 0..1 progress into the caller's overall fraction. */
  progressRange: [number, number];
}

/** Steps per epoch and total steps: `epochs` wins over `iterations`; batches never exceed the training set. */
export function stepPlan(hp: Hyperparameters, trainCount: number): { batch: number; stepsPerEpoch: number; total: number } {
  const batch = Math.min(hp.batchSize, trainCount);
  const stepsPerEpoch = Math.ceil(trainCount / batch);
  return { batch, stepsPerEpoch, total: hp.epochs ? hp.epochs * stepsPerEpoch : hp.iterations };
}

/** Learning-rate multiplier at `step`: ×lrDecayFactor for every decay point already passed. */
export function lrMultiplier(hp: Hyperparameters, step: number, total: number): number {
  const passed = hp.lrDecayAt.filter((at) => step >= Math.round(at * total)).length;
  return hp.lrDecayFactor ** passed;
}

/**
 * Indices of the batch at `step`: consecutive slices of a stream of per-epoch permutations, so
 * every batch is full-size and any step can be recomputed from the seed alone (for resume).
 */
export function batchIndices(seed: number, n: number, batch: number, step: number): number[] {
  const out: number[] = [];
  let position = step * batch;
  let cachedEpoch = -1;
  let order: number[] = [];
  while (out.length < batch) {
    const epoch = Math.floor(position / n);
    if (epoch !== cachedEpoch) {
      order = shuffle(Array.from({ length: n }, (_, i) => i), createRng(deriveSeed(seed, 'order', epoch)));
      cachedEpoch = epoch;
    }
    out.push(order[position % n]);
    position++;
  }
  return out;
}

export interface StepInputs {
  x: tf.Tensor4D;
  labels: tf.Tensor1D;
  /** R[y] for the batch; null for fine-tuning. */
  softTargets: tf.Tensor2D | null;
}

/**
 * One SGD step of Co-Tuning (or of fine-tuning when softTargets is null / λ = 0): forward in
 * training mode, loss, gradients of the trainable groups, Nesterov update. Returns the loss terms.
 */
export function trainStep(
  net: CoTuningNet,
  optimizer: NesterovSgd,
  groups: VariableGroups,
  inputs: StepInputs,
  lambda: number,
  lrs: { backbone: number; sourceHead: number; targetHead: number },
): { loss: number; lossTarget: number; lossSource: number } {
  const withSource = inputs.softTargets !== null && lambda > 0;
  const variables = [...groups.backbone, ...(withSource ? groups.sourceHead : []), ...groups.targetHead];
  // The loss terms are kept out of variableGrads' scope so they can be reported; disposed below.
  let parts: tf.Scalar[] = [];
  const values = tf.tidy(() => {
    // Frozen layers run before the tape starts, so they cost one inference pass and nothing more.
    const frozen = groups.split ? { split: groups.split, cut: frozenFeatures(groups.split, inputs.x) } : undefined;
    const { value, grads } = tf.variableGrads(() => {
      const f = trainingFeatures(net, inputs.x, frozen);
      const terms = coTuningLoss(
        targetLogits(net, f),
        inputs.labels,
        withSource ? sourceLogits(net, f) : null,
        inputs.softTargets,
        withSource ? lambda : 0,
      );
      parts = [tf.keep(terms.target), tf.keep(terms.source)];
      return terms.total;
    }, variables);
    const byVariable = new Map<tf.Variable, tf.Tensor>(variables.map((v) => [v, grads[v.name]]));
    optimizer.apply(byVariable, [
      { variables: groups.backbone, lr: lrs.backbone },
      { variables: withSource ? groups.sourceHead : [], lr: lrs.sourceHead },
      { variables: groups.targetHead, lr: lrs.targetHead },
    ]);
    return tf.stack([value, ...parts]);
  });
  const [loss, lossTarget, lossSource] = values.dataSync();
  tf.dispose([values, ...parts]);
  return { loss, lossTarget, lossSource };
}

/**
 * Fine-tune `net` on `train`, selecting the weights with the best validation top-1 (the test set
 * is never seen here). Checkpoints once per epoch and resumes from a matching checkpoint.
 * On return the net holds the selected weights.
 */
export async function train(setup: TrainSetup): Promise<TrainResult> {
  const { net, hp, hooks } = setup;
  const withSource = setup.method === 'co-tuning';
  if (withSource && !setup.relationship) throw new Error('train: co-tuning needs a relationship matrix');
  const plan = stepPlan(hp, setup.train.count);
  const groups = trainableGroups(net, withSource, hp.freezeBelow);
  const trainables = [...groups.backbone, ...groups.sourceHead, ...groups.targetHead];
  const optimizer = new NesterovSgd(hp.momentum, hp.weightDecay);
  const relationship = withSource ? tf.tensor2d(setup.relationship!, [net.numClasses, net.inspection.numSourceClasses]) : null;
  const fingerprint = createHash('sha256').update(setup.fingerprint).update(setup.method).update(JSON.stringify(hp)).digest('hex');
  const evalInterval = Math.max(1, Math.ceil(plan.total / hp.evalEvery));
  const curves: TrainCurves = { epochs: [], validation: [] };
  let best: tf.Tensor[] | null = null;
  let bestValTop1 = -1;
  let bestStep = -1;
  let startStep = 0;
  let priorSeconds = 0;

  if (setup.checkpointDir) {
    const ckpt = await loadCheckpoint(setup.checkpointDir, fingerprint);
    if (ckpt) {
      restore(net, ckpt.weights);
      optimizer.load(trainables, ckpt.velocity);
      best = ckpt.best;
      bestValTop1 = ckpt.state.bestValTop1;
      bestStep = ckpt.state.bestStep;
      startStep = ckpt.state.step;
      priorSeconds = ckpt.state.seconds;
      Object.assign(curves, ckpt.state.curves as TrainCurves);
      tf.dispose([...ckpt.weights, ...ckpt.velocity.filter((v): v is tf.Tensor => v !== null)]);
      hooks.log?.(`${setup.method}: resumed from checkpoint at step ${startStep}/${plan.total}`);
    }
  }

  const started = Date.now();
  let epochSums = { loss: 0, target: 0, source: 0, steps: 0 };
  let rate = 0;
  const report = (p: Omit<Progress, 'fraction' | 'phase' | 'method'>, done: number) => {
    const [lo, hi] = setup.progressRange;
    hooks.onProgress?.({ phase: 'training', method: setup.method, fraction: lo + (hi - lo) * done, ...p });
  };

  // An epoch is ceil(n / batch) steps (batches run on across epoch boundaries so all are full-size).
  const epochsSeen = (step: number) => Math.round((step / plan.stepsPerEpoch) * 100) / 100;
  const validate = async (step: number) => {
    if (setup.val.count === 0) return;
    const logits = await predictLogits(net, setup.val, setup.normalization, 'target', hooks.signal);
    const acc = top1Accuracy(logits, setup.val.labels, net.numClasses);
    curves.validation.push({ epoch: epochsSeen(step), step, valTop1: acc });
    if (acc > bestValTop1) {
      tf.dispose(best ?? []);
      best = snapshot(net);
      bestValTop1 = acc;
      bestStep = step;
    }
    return acc;
  };

  let checkpointedStep = startStep;
  let firstLoss: number | undefined;
  const writeCheckpoint = async (done: number) => {
    if (!setup.checkpointDir || done === checkpointedStep) return;
    await saveCheckpoint(setup.checkpointDir, {
      state: {
        fingerprint,
        step: done,
        totalSteps: plan.total,
        bestValTop1,
        bestStep,
        hasBest: best !== null,
        curves,
        seconds: priorSeconds + (Date.now() - started) / 1000,
      },
      weights: stateVariables(net),
      velocity: optimizer.state(trainables),
      best,
    });
    checkpointedStep = done;
    await hooks.onCheckpoint?.({ dir: setup.checkpointDir, method: setup.method, step: done });
  };

  try {
    for (let step = startStep; step < plan.total; step++) {
      if (hooks.signal?.aborted) {
        // Stopping (shutdown or cancel): keep the steps done since the last epoch boundary.
        await writeCheckpoint(step);
        throwIfAborted(hooks.signal);
      }
      const t0 = performance.now();
      const multiplier = lrMultiplier(hp, step, plan.total);
      const indices = batchIndices(setup.seed, setup.train.count, plan.batch, step);
      const labelArray = Int32Array.from(indices, (i) => setup.train.labels[i]);
      const labels = tf.tensor1d(labelArray, 'int32');
      const augment = hp.augment ? { rng: createRng(deriveSeed(setup.seed, 'augment', step)), scaleMin: hp.cropScaleMin } : null;
      const inputs: StepInputs = {
        x: trainBatch(setup.train, indices, net.imageSize, setup.normalization, augment),
        labels,
        softTargets: relationship ? (tf.gather(relationship, labels) as tf.Tensor2D) : null,
      };
      const terms = trainStep(net, optimizer, groups, inputs, withSource ? hp.lambda : 0, {
        backbone: hp.lrBackbone * multiplier,
        sourceHead: hp.lrSourceHead * multiplier,
        targetHead: hp.lrTargetHead * multiplier,
      });
      tf.dispose([inputs.x, inputs.labels, inputs.softTargets ?? []]);
      if (!Number.isFinite(terms.loss)) throw new Error(`train: loss became ${terms.loss} at step ${step + 1}; lower the learning rates`);
      firstLoss ??= terms.loss;
      // A loss three orders of magnitude above where it started is divergence, not noise: stop and say so.
      if (terms.loss > DIVERGENCE_FACTOR * Math.max(firstLoss, 1)) {
        throw new Error(`train: loss diverged to ${terms.loss.toPrecision(3)} at step ${step + 1} (it started at ${firstLoss.toFixed(3)}); lower the learning rates`);
      }

      const seconds = (performance.now() - t0) / 1000;
      const instant = plan.batch / seconds;
      rate = rate === 0 ? instant : 0.8 * rate + 0.2 * instant;
      epochSums = { loss: epochSums.loss + terms.loss, target: epochSums.target + terms.lossTarget, source: epochSums.source + terms.lossSource, steps: epochSums.steps + 1 };
      const done = step + 1;
      const epoch = Math.floor(step / plan.stepsPerEpoch);
      const epochEnded = done % plan.stepsPerEpoch === 0 || done === plan.total;
      let valTop1: number | undefined;
      if (done % evalInterval === 0 || done === plan.total) valTop1 = await validate(done);
      if (epochEnded) {
        curves.epochs.push({
          epoch: epochsSeen(done),
          step: done,
          loss: epochSums.loss / epochSums.steps,
          lossTarget: epochSums.target / epochSums.steps,
          lossSource: epochSums.source / epochSums.steps,
          lr: hp.lrTargetHead * multiplier,
        });
        epochSums = { loss: 0, target: 0, source: 0, steps: 0 };
      }
      report(
        {
          epoch: epoch + 1,
          epochs: Math.ceil(plan.total / plan.stepsPerEpoch),
          step: done,
          steps: plan.total,
          loss: terms.loss,
          lossTarget: terms.lossTarget,
          lossSource: terms.lossSource,
          lr: hp.lrTargetHead * multiplier,
          imagesPerSec: rate,
          etaSeconds: ((plan.total - done) * plan.batch) / rate,
          valTop1,
        },
        done / plan.total,
      );
      if (epochEnded) await writeCheckpoint(done);
      // Yield so abort signals, timers and progress writes get through between steps.
      await new Promise((r) => setImmediate(r));
    }
    if (best) restore(net, best);
    const seconds = priorSeconds + (Date.now() - started) / 1000;
    const trainedImages = (plan.total - startStep) * plan.batch;
    return {
      steps: plan.total,
      bestValTop1: Math.max(bestValTop1, 0),
      bestStep: bestStep < 0 ? plan.total : bestStep,
      curves,
      seconds,
      imagesPerSec: trainedImages / Math.max(1e-9, (Date.now() - started) / 1000),
      resumedFromStep: startStep,
    };
  } finally {
    tf.dispose(best ?? []);
    relationship?.dispose();
    optimizer.dispose();
  }
}
