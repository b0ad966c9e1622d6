import * as tf from '@tensorflow/tfjs';
import { NESTEROV_UPDATE_KERNEL, type NesterovAttrs } from './backend/nesterov.js';

/**
 * SGD with Nesterov momentum and coupled L2 weight decay, the PyTorch update the reference uses:
 *   g ← ∇ + wd·θ;  v ← μ·v + g;  θ ← θ − lr·(g + μ·v)
 * with one learning rate per variable group. TF.js's momentum optimiser has no weight decay and
 * no groups, and its state is positional; this keeps state by variable and is checkpointable.
 */
export class NesterovSgd {
  private readonly velocity = new Map<tf.Variable, tf.Variable>();

  constructor(
    readonly momentum: number,
    readonly weightDecay: number,
  ) {}

  /** Apply one update. `groups` pairs each variable list with its learning rate. */
  apply(grads: Map<tf.Variable, tf.Tensor>, groups: { variables: tf.Variable[]; lr: number }[]): void {
    // The backend's fused update kernel where it has one (WASM), the same maths in tf ops elsewhere.
    const fused = tf.getKernel(NESTEROV_UPDATE_KERNEL, tf.getBackend()) !== undefined;
    tf.tidy(() => {
      for (const { variables, lr } of groups) {
        for (const theta of variables) {
          const grad = grads.get(theta);
          if (!grad) continue;
          const v = this.velocity.get(theta);
          const [next, velocity] = fused ? this.fusedStep(theta, grad, v, lr) : this.step(theta, grad, v, lr);
          if (v) v.assign(velocity);
          else this.velocity.set(theta, tf.variable(velocity, false)); // first step: v = g
          theta.assign(next);
        }
      }
    });
  }

  private fusedStep(theta: tf.Variable, grad: tf.Tensor, v: tf.Variable | undefined, lr: number): [tf.Tensor, tf.Tensor] {
    const attrs: NesterovAttrs = { lr, momentum: this.momentum, weightDecay: this.weightDecay };
    const inputs: tf.NamedTensorMap = v ? { theta, grad, velocity: v } : { theta, grad };
    return tf.engine().runKernel(NESTEROV_UPDATE_KERNEL, inputs, attrs as unknown as tf.NamedAttrMap) as [tf.Tensor, tf.Tensor];
  }

  private step(theta: tf.Variable, grad: tf.Tensor, v: tf.Variable | undefined, lr: number): [tf.Tensor, tf.Tensor] {
    const g = this.weightDecay > 0 ? tf.add(grad, tf.mul(theta, this.weightDecay)) : grad;
    const velocity = v ? tf.add(tf.mul(v, this.momentum), g) : g;
    return [tf.sub(theta, tf.mul(tf.add(g, tf.mul(velocity, this.momentum)), lr)), velocity];
  }

  /** Velocity buffers of `variables` in order (undefined before their first step). */
  state(variables: tf.Variable[]): (tf.Variable | undefined)[] {
    return variables.map((v) => this.velocity.get(v));
  }

  /** Restore velocity buffers saved by state(); null entries mean "not started". */
  load(variables: tf.Variable[], values: (tf.Tensor | null)[]): void {
    variables.forEach((variable, i) => {
      const value = values[i];
      this.velocity.get(variable)?.dispose();
      if (value) this.velocity.set(variable, tf.variable(value, false));
      else this.velocity.delete(variable);
    });
  }

  dispose(): void {
    for (const v of this.velocity.values()) v.dispose();
    this.velocity.clear();
  }
}
