import * as tf from '@tensorflow/tfjs';
import { throwIfAborted } from './errors.js';
import { evalBatch, type ImageSet, type Normalization } from './images.js';
import { features, sourceLogits, targetLogits, type CoTuningNet } from './network.js';
import type { ClassificationMetrics } from './types.js';

const EVAL_BATCH = 64;

/**
 * Run the net in inference mode over `set` and collect one head's logits.
 * Shape: set of n images → Float32Array [n × (C or S)].
 */
export async function predictLogits(
  net: CoTuningNet,
  set: ImageSet,
  normalization: Normalization,
  head: 'target' | 'source',
  signal?: AbortSignal,
): Promise<Float32Array> {
  const width = head === 'target' ? net.numClasses : net.inspection.numSourceClasses;
  const out = new Float32Array(set.count * width);
  for (let start = 0; start < set.count; start += EVAL_BATCH) {
    throwIfAborted(signal);
    const indices = Array.from({ length: Math.min(EVAL_BATCH, set.count - start) }, (_, i) => start + i);
    const logits = tf.tidy(() => {
      const f = features(net, evalBatch(set, indices, normalization), false);
      return head === 'target' ? targetLogits(net, f) : sourceLogits(net, f);
    });
    out.set(await logits.data(), start * width);
    logits.dispose();
    // Let timers and abort messages through between batches.
    await new Promise((r) => setImmediate(r));
  }
  return out;
}

/** Indices of the k largest entries of row `r`. */
function topK(logits: Float32Array, r: number, width: number, k: number): number[] {
  const row = Array.from(logits.subarray(r * width, (r + 1) * width), (v, i) => [v, i] as const);
  row.sort((a, b) => b[0] - a[0]);
  return row.slice(0, k).map(([, i]) => i);
}

/** Top-1, top-5, per-class accuracy and the confusion matrix of target logits [n × C]. */
export function classificationMetrics(logits: Float32Array, labels: Int32Array, classes: string[]): ClassificationMetrics {
  const C = classes.length;
  const n = labels.length;
  const confusion = Array.from({ length: C }, () => new Array<number>(C).fill(0));
  let top1 = 0;
  let top5 = 0;
  for (let r = 0; r < n; r++) {
    const best = topK(logits, r, C, Math.min(5, C));
    confusion[labels[r]][best[0]]++;
    if (best[0] === labels[r]) top1++;
    if (best.includes(labels[r])) top5++;
  }
  const perClass: Record<string, number> = {};
  classes.forEach((name, c) => {
    const total = confusion[c].reduce((a, b) => a + b, 0);
    perClass[name] = total ? confusion[c][c] / total : 0;
  });
  return { top1: n ? top1 / n : 0, top5: n ? top5 / n : 0, perClass, confusion, classes, count: n };
}

/** Top-1 accuracy only (for validation during training). */
export function top1Accuracy(logits: Float32Array, labels: Int32Array, C: number): number {
  let hits = 0;
  for (let r = 0; r < labels.length; r++) {
    let best = 0;
    for (let c = 1; c < C; c++) if (logits[r * C + c] > logits[r * C + best]) best = c;
    if (best === labels[r]) hits++;
  }
  return labels.length ? hits / labels.length : 0;
}
