/**
 * Batch norm with the following relu6 Activation fused in (src/cotuning/backend/relu6-fusion.ts):
 * the same values and gradients as the two layers run apart, and no fusion where another
 * consumer or a model output would see the clamped values.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { registerFastGradients } from '../../src/cotuning/backend/gradients.js';
import { rand, relError } from '../helpers/tensors.js';

const SHAPE = [4, 10, 10, 3];
// Not a multiple of 4: the kernels' vector loops and their scalar tails both run.
const CHANNELS = 6;

/** conv → batch norm → relu6 Activation, as MobileNet has them; β and γ spread the values over (−2, 8). */
function layers(): { conv: tf.layers.Layer; bn: tf.layers.Layer; relu6: tf.layers.Layer } {
  return {
    conv: tf.layers.conv2d({
      filters: CHANNELS,
      kernelSize: 3,
      padding: 'same',
      useBias: false,
      kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }),
    }),
    bn: tf.layers.batchNormalization({
      betaInitializer: tf.initializers.constant({ value: 3 }),
      gammaInitializer: tf.initializers.constant({ value: 2.5 }),
    }),
    relu6: tf.layers.activation({ activation: 'relu6' }),
  };
}

const kernelNames = async (f: () => void): Promise<string[]> =>
  (await tf.profile(f)).kernels.map((k) => k.name);

/** Gradients of Σ r·output w.r.t. the conv kernel and the batch norm's γ and β, in training mode. */
function trainingGrads(model: tf.LayersModel, x: tf.Tensor, weights: tf.LayerVariable[]): Float32Array[] {
  return tf.tidy(() => {
    const vars = weights.map((w) => w.read() as tf.Variable);
    const { grads } = tf.variableGrads(() => {
      const out = model.apply(x, { training: true }) as tf.Tensor | tf.Tensor[];
      const y = Array.isArray(out) ? out[0] : out;
      return tf.sum(tf.mul(y, rand(y.shape, 7))) as tf.Scalar;
    }, vars);
    return vars.map((v) => grads[v.name].dataSync() as Float32Array);
  });
}

for (const backend of ['wasm', 'cpu'])
  describe(`${backend}: batch norm + relu6 fusion`, () => {
    before(async () => {
      assert.ok(await tf.setBackend(backend));
      await registerFastGradients(backend);
    });

    it('fuses where only the Activation sees the output: same values and gradients as unfused', async () => {
      const { conv, bn, relu6 } = layers();
      const input = tf.input({ shape: SHAPE.slice(1) });
      const normed = bn.apply(conv.apply(input)) as tf.SymbolicTensor;
      const clamped = relu6.apply(normed) as tf.SymbolicTensor;
      const fused = tf.model({ inputs: input, outputs: clamped });
      // The same layers, with the batch norm's output also a model output: that one must not fuse.
      const apart = tf.model({ inputs: input, outputs: [clamped, normed] });
      const x = rand(SHAPE, 3);
      const weights = [...conv.trainableWeights, ...bn.trainableWeights];

      const fusedKernels = await kernelNames(() => void trainingGrads(fused, x, weights));
      const apartKernels = await kernelNames(() => void trainingGrads(apart, x, weights));
      assert.ok(!fusedKernels.includes('ClipByValue'), 'relu6 ran as its own clamp: not fused');
      assert.ok(
        apartKernels.includes('ClipByValue'),
        'fused although the batch-norm output is a model output',
      );

      const want = trainingGrads(apart, x, weights);
      const got = trainingGrads(fused, x, weights);
      got.forEach((g, i) =>
        assert.ok(
          relError(g, want[i]) <= 1e-6,
          `gradient ${i}: relative error ${relError(g, want[i]).toExponential(2)}`,
        ),
      );
      const yFused = fused.apply(x, { training: true }) as tf.Tensor;
      const [yApart, bnOut] = apart.apply(x, { training: true }) as tf.Tensor[];
      assert.ok(relError(yFused.dataSync(), yApart.dataSync()) <= 1e-6, 'fused forward differs');
      const raw = bnOut.dataSync();
      assert.ok(
        raw.some((v) => v < 0) && raw.some((v) => v > 6),
        'the batch-norm model output came out clamped',
      );
      tf.dispose([x, yFused, yApart, bnOut]);
      fused.dispose();
    });

    it('does not fuse when another layer calls the batch norm from its own code', () => {
    // In its graph the batch norm feeds only relu6; a second model runs it inside a custom layer.
    const { conv, bn, relu6 } = layers();
    const input = tf.input({ shape: SHAPE.slice(1) });
    const graph = tf.model({ inputs: input, outputs: relu6.apply(bn.apply(conv.apply(input))) as tf.SymbolicTensor });
    class Wrap extends tf.layers.Layer {
      static readonly className = 'Wrap';
      override call(inputs: tf.Tensor | tf.Tensor[], kwargs: Record<string, unknown>): tf.Tensor {
        return bn.apply(inputs, kwargs) as tf.Tensor;
      }
    }
    const other = tf.input({ shape: [...SHAPE.slice(1, 3), CHANNELS] });
    const wrapped = tf.model({ inputs: other, outputs: new Wrap({}).apply(other) as tf.SymbolicTensor });
    const x = tf.mul(rand([...SHAPE.slice(0, 3), CHANNELS], 5), 4);
    const y = wrapped.apply(x, { training: true }) as tf.Tensor;
    const values = y.dataSync();
    assert.ok(values.some((v) => v < 0) && values.some((v) => v > 6), 'the custom layer got clamped batch-norm values');
    tf.dispose([x, y]);
    graph.dispose();
  });

  it('does not fuse when another layer also reads the batch-norm output', async () => {
      const { conv, bn, relu6 } = layers();
      const input = tf.input({ shape: SHAPE.slice(1) });
      const normed = bn.apply(conv.apply(input)) as tf.SymbolicTensor;
      const both = tf.layers
        .concatenate()
        .apply([
          relu6.apply(normed) as tf.SymbolicTensor,
          tf.layers.activation({ activation: 'linear' }).apply(normed) as tf.SymbolicTensor,
        ]);
      const model = tf.model({ inputs: input, outputs: both as tf.SymbolicTensor });
      const x = rand(SHAPE, 4);
      const kernels = await kernelNames(() =>
        tf.tidy(() => void (model.apply(x, { training: true }) as tf.Tensor).dataSync()),
      );
      assert.ok(
        kernels.includes('ClipByValue'),
        'fused although a linear branch reads the batch-norm output',
      );
      const y = model.apply(x, { training: true }) as tf.Tensor;
      const linear = tf.tidy(() => tf.slice(y, [0, 0, 0, CHANNELS], [-1, -1, -1, CHANNELS]).dataSync());
      assert.ok(
        linear.some((v) => v < 0) && linear.some((v) => v > 6),
        'the linear branch saw clamped values',
      );
      tf.dispose([x, y]);
      model.dispose();
    });
  });
