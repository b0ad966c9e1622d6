import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';

/** Training progress that survives a crash: enough to continue at `step` as if never stopped. */
export interface CheckpointState {
  /** Identifies the run (method, split, hyperparameters, weights); a checkpoint of another run is ignored. */
  fingerprint: string;
  /** Number of optimiser steps already applied. */
  step: number;
  totalSteps: number;
  bestValTop1: number;
  bestStep: number;
  hasBest: boolean;
  curves: unknown;
  seconds: number;
}

export interface Checkpoint {
  state: CheckpointState;
  weights: tf.Tensor[];
  /** Optimiser velocities; null where a variable has not been stepped yet. */
  velocity: (tf.Tensor | null)[];
  best: tf.Tensor[] | null;
}

interface TensorManifest {
  shapes: (number[] | null)[];
}

async function writeTensors(path: string, tensors: (tf.Tensor | null | undefined)[]): Promise<void> {
  const manifest: TensorManifest = { shapes: tensors.map((t) => (t ? t.shape : null)) };
  const chunks = await Promise.all(tensors.map(async (t) => (t ? Buffer.from((await t.data<'float32'>()).buffer) : Buffer.alloc(0))));
  const header = Buffer.from(JSON.stringify(manifest));
  const length = Buffer.alloc(4);
  length.writeUInt32LE(header.length);
  await writeFile(path, Buffer.concat([length, header, ...chunks]));
}

async function readTensors(path: string): Promise<(tf.Tensor | null)[]> {
  const buf = await readFile(path);
  const headerLength = buf.readUInt32LE(0);
  const { shapes } = JSON.parse(buf.subarray(4, 4 + headerLength).toString()) as TensorManifest;
  let offset = 4 + headerLength;
  return shapes.map((shape) => {
    if (!shape) return null;
    const size = shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(size);
    Buffer.from(values.buffer).set(buf.subarray(offset, offset + size * 4));
    offset += size * 4;
    return tf.tensor(values, shape);
  });
}

/** Write a checkpoint atomically: readers see the previous one or this one, never half of each. */
export async function saveCheckpoint(
  dir: string,
  checkpoint: { state: CheckpointState; weights: tf.Tensor[]; velocity: (tf.Tensor | undefined)[]; best: tf.Tensor[] | null },
): Promise<void> {
  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  await writeTensors(join(tmp, 'weights.bin'), checkpoint.weights);
  await writeTensors(join(tmp, 'velocity.bin'), checkpoint.velocity);
  if (checkpoint.best) await writeTensors(join(tmp, 'best.bin'), checkpoint.best);
  await writeFile(join(tmp, 'state.json'), JSON.stringify(checkpoint.state));
  const old = `${dir}.old-${process.pid}`;
  await rename(dir, old).catch(() => undefined);
  await rename(tmp, dir);
  await rm(old, { recursive: true, force: true });
}

/** The checkpoint in `dir` if there is one for this `fingerprint`, else null. */
export async function loadCheckpoint(dir: string, fingerprint: string): Promise<Checkpoint | null> {
  let state: CheckpointState;
  try {
    state = JSON.parse(await readFile(join(dir, 'state.json'), 'utf8')) as CheckpointState;
  } catch {
    return null;
  }
  if (state.fingerprint !== fingerprint) return null;
  const weights = (await readTensors(join(dir, 'weights.bin'))) as tf.Tensor[];
  const velocity = await readTensors(join(dir, 'velocity.bin'));
  const best = state.hasBest ? ((await readTensors(join(dir, 'best.bin'))) as tf.Tensor[]) : null;
  return { state, weights, velocity, best };
}
