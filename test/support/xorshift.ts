/**
 * Marsaglia xorshift32 (13, 17, 5); each state is written as 4 little-endian bytes. Deterministic test input that
 * any other implementation can reproduce (the golden chunking vectors depend on it). Seed 0 is taken as 1.
 */
export function xorshiftBytes(seed: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    for (let b = 0; b < 4 && i + b < length; b++) out[i + b] = (x >>> (8 * b)) & 0xff;
  }
  return out;
}
