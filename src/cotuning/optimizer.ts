import * as tf from '@tensorflow/tfjs';

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
    tf.tidy(() => {
      for (const { variables, lr } of groups) {
        for (const theta of variables) {
          const grad = grads.get(theta);
          if (!grad) continue;
          const g = this.weightDecay > 0 ? tf.add(grad, tf.mul(theta, this.weightDecay)) : grad;
          let v = this.velocity.get(theta);
          if (!v) {
            // First step: v = g (the buffer starts at zero).
            v = tf.variable(g, false);
            this.velocity.set(theta, v);
          } else {
            v.assign(tf.add(tf.mul(v, this.momentum), g));
          }
          theta.assign(tf.sub(theta, tf.mul(tf.add(g, tf.mul(v, this.momentum)), lr)));
        }
      }
    });
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
