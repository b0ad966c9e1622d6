/**
 * Fused multiply-add in our WASM kernels (src/cotuning/backend/wasm-fma.ts): the source rewrite,
 * and the kernels in a process with it switched off (COTUNE_WASM_FMA=0) against one with it on.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { fusedMultiplyAddAvailable, fuseMultiplyAdds } from '../../src/cotuning/backend/wasm-fma.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/wasm-fma-kernels.ts', import.meta.url));

describe('fused multiply-add in the WASM kernels', () => {
  it('rewrites each add of a product, in either operand order and nested, and nothing else', () => {
    const wat = `(module ;; a comment with (f32x4.add (f32x4.mul a b) c) in it
      (func (param $a v128) (param $b v128) (param $c v128) (result v128)
        (f32x4.add (local.get $c) (f32x4.mul (local.get $a) (f32x4.add (f32x4.mul (local.get $b) (local.get $b)) (local.get $a)))))
      (func (param $a v128) (result v128) (f32x4.add (local.get $a) (local.get $a)) (f32x4.mul (local.get $a) (local.get $a))))`;
    const { source, fused } = fuseMultiplyAdds(wat);
    assert.equal(fused, 2);
    assert.ok(!source.includes('a comment'), 'comments are dropped');
    assert.ok(
      source.includes('(f32x4.relaxed_madd (local.get $a) (f32x4.relaxed_madd (local.get $b) (local.get $b) (local.get $a)) (local.get $c))'),
      source,
    );
    assert.ok(source.includes('(f32x4.add (local.get $a) (local.get $a))') && source.includes('(f32x4.mul (local.get $a) (local.get $a))'), source);
    assert.throws(() => fuseMultiplyAdds('(module (func)'), /unbalanced/);
  });

  it('fuses the accumulations of every compute kernel in kernels.wat', () => {
    const source = readFileSync(new URL('../../src/cotuning/backend/kernels.wat', import.meta.url), 'utf8');
    const { source: out, fused } = fuseMultiplyAdds(source);
    assert.ok(fused >= 30, `only ${fused} multiply-adds fused`);
    assert.ok(!/f32x4\.add \(f32x4\.mul/.test(out), 'an add of a product was left');
  });

  it('gives the same gradients with and without it, and reports which ran', { skip: !fusedMultiplyAddAvailable() && 'no relaxed SIMD here' }, () => {
    const run = (fma: string) => {
      const r = spawnSync(process.execPath, ['--import', import.meta.resolve('tsx'), FIXTURE], {
        encoding: 'utf8',
        timeout: 120_000,
        maxBuffer: 64 * 2 ** 20,
        env: { ...process.env, COTUNE_WASM_FMA: fma },
      });
      assert.equal(r.status, 0, r.stderr);
      return JSON.parse(r.stdout.trim().split('\n').pop() as string) as { fusedMultiplyAdd: boolean; grads: number[][] };
    };
    const [plain, fused] = [run('0'), run('1')];
    const typo = spawnSync(process.execPath, ['--import', import.meta.resolve('tsx'), FIXTURE], {
      encoding: 'utf8',
      timeout: 120_000,
      env: { ...process.env, COTUNE_WASM_FMA: 'off' },
    });
    assert.notEqual(typo.status, 0, 'COTUNE_WASM_FMA=off was accepted');
    assert.match(typo.stderr, /COTUNE_WASM_FMA: must be 0, 1 or empty/);
    assert.equal(plain.fusedMultiplyAdd, false);
    assert.equal(fused.fusedMultiplyAdd, true);
    plain.grads.forEach((g, i) => {
      let diff = 0;
      let scale = 0;
      g.forEach((v, j) => {
        diff = Math.max(diff, Math.abs(v - fused.grads[i][j]));
        scale = Math.max(scale, Math.abs(v));
      });
      assert.ok(diff <= 1e-5 * scale, `gradient ${i}: relative difference ${(diff / scale).toExponential(2)}`);
      // Input gradients of regular convolutions are XNNPACK's; every other one is ours and must differ in rounding.
      if (i !== 0 && i !== 2) assert.ok(diff > 0, `gradient ${i} bit-identical with and without: the fused kernels did not run`);
    });
  });
});
