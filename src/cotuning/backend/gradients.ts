/**
 * Registers fast gradient kernels for backends that lack them (WASM has no convolution
 * gradients). Filled in by the fast-gradients work; until then WASM training is unsupported.
 */
export function registerFastGradients(_backend: string): void {}
