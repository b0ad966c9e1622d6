import v8 from 'node:v8';

/**
 * Fused multiply-add for our WASM kernels where the runtime has relaxed SIMD.
 *
 * kernels.wat is written with plain SIMD: every accumulation is f32x4.add of an f32x4.mul. Our
 * compute-bound kernels (matrix products, convolution and depthwise gradients) are limited by
 * those two instructions, and relaxed SIMD's f32x4.relaxed_madd does both in one (an FMA on
 * x86-64 with FMA3 and on ARM64): 22-28 % faster single-threaded on the matrix products,
 * measured on the same buffers. So where it validates, each add of a product is assembled as
 * one relaxed_madd; the sums are the same up to rounding (one rounding instead of two).
 *
 * Node 20's V8 has relaxed SIMD behind --experimental-wasm-relaxed-simd (it ships enabled from
 * V8 11.4, Node 22); the flag is set at start-up, before our module is compiled. Set
 * COTUNE_WASM_FMA=0 to keep plain SIMD (1 or empty: use it where it validates).
 */

/** A module with one relaxed_madd: (v128, v128, v128) → v128. */
const PROBE = new Uint8Array([
  0x00,
  0x61,
  0x73,
  0x6d,
  0x01,
  0x00,
  0x00,
  0x00, // magic, version
  0x01,
  0x08,
  0x01,
  0x60,
  0x03,
  0x7b,
  0x7b,
  0x7b,
  0x01,
  0x7b, // type: (v128 v128 v128) → v128
  0x03,
  0x02,
  0x01,
  0x00, // one function of that type
  0x0a,
  0x0d,
  0x01,
  0x0b,
  0x00,
  0x20,
  0x00,
  0x20,
  0x01,
  0x20,
  0x02,
  0xfd,
  0x85,
  0x02,
  0x0b, // local.get 0 1 2; f32x4.relaxed_madd
]);

interface WebAssemblyValidate {
  validate(binary: Uint8Array): boolean;
}
const validate = (binary: Uint8Array): boolean =>
  (globalThis as unknown as { WebAssembly: WebAssemblyValidate }).WebAssembly.validate(binary);

let available: boolean | undefined;

/**
 * COTUNE_WASM_FMA as set: '' (use it where it validates), '0' or '1'; throws on anything else.
 * Programs call it at start-up too, so that a typo fails before any work, on every backend.
 */
export function fusedMultiplyAddSetting(): '' | '0' | '1' {
  const setting = (process.env.COTUNE_WASM_FMA ?? '').trim();
  if (setting !== '' && setting !== '0' && setting !== '1') {
    throw new Error(`COTUNE_WASM_FMA: must be 0, 1 or empty (got ${JSON.stringify(process.env.COTUNE_WASM_FMA)})`);
  }
  return setting;
}

/** Whether our kernels can use relaxed_madd here (enabling Node 20's flag for it once). */
export function fusedMultiplyAddAvailable(): boolean {
  if (available !== undefined) return available;
  if (fusedMultiplyAddSetting() === '0') return (available = false);
  if (!validate(PROBE)) v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
  return (available = validate(PROBE));
}

type Node = string | Node[];

/** The s-expressions of WAT text, without comments. Atoms keep their text. */
function parse(text: string): Node[] {
  const root: Node[] = [];
  const stack: Node[][] = [root];
  const token = /\(;[\s\S]*?;\)|;;[^\n]*|\(|\)|"(?:[^"\\]|\\.)*"|[^\s()";]+/g;
  for (const [t] of text.matchAll(token)) {
    if (t.startsWith(';;') || t.startsWith('(;')) continue;
    if (t === '(') {
      const list: Node[] = [];
      stack[stack.length - 1].push(list);
      stack.push(list);
    } else if (t === ')') {
      stack.pop();
      if (stack.length === 0) throw new Error('wasm kernels: unbalanced ")" in the WAT source');
    } else stack[stack.length - 1].push(t);
  }
  if (stack.length !== 1) throw new Error('wasm kernels: unbalanced "(" in the WAT source');
  return root;
}

const print = (node: Node): string => (typeof node === 'string' ? node : `(${node.map(print).join(' ')})`);

const isMul = (node: Node): node is Node[] =>
  Array.isArray(node) && node.length === 3 && node[0] === 'f32x4.mul';

/** (f32x4.add c (f32x4.mul a b)) and (f32x4.add (f32x4.mul a b) c) → (f32x4.relaxed_madd a b c), innermost first. */
function fuse(node: Node, counter: { n: number }): Node {
  if (typeof node === 'string') return node;
  const items = node.map((item) => fuse(item, counter));
  if (items.length === 3 && items[0] === 'f32x4.add') {
    const [, left, right] = items;
    const [product, addend] = isMul(right)
      ? [right, left]
      : isMul(left)
        ? [left, right]
        : [undefined, undefined];
    if (product && addend !== undefined) {
      counter.n += 1;
      return ['f32x4.relaxed_madd', product[1], product[2], addend];
    }
  }
  return items;
}

/** WAT text with every add of a product as one relaxed_madd, and how many were fused. */
export function fuseMultiplyAdds(source: string): { source: string; fused: number } {
  const counter = { n: 0 };
  const out = parse(source).map((node) => print(fuse(node, counter)));
  return { source: out.join('\n'), fused: counter.n };
}
