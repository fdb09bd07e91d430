/**
 * The demo's dataset: two interleaved spirals generated from a seed by a
 * small seeded PRNG, so every run of the demo sees the same points.
 *
 * @module
 */

/** Coordinates per point. */
export const INPUTS = 2;
const RADIUS = 6;
const NOISE = 0.15;

/**
 * mulberry32: a small, fast, seeded 32-bit PRNG.
 *
 * @param state The PRNG state, advanced in place.
 * @returns A function returning numbers in [0, 1).
 */
export function mulberry32(state: { s: number }): () => number {
  return () => {
    state.s = (state.s + 0x6d2b79f5) >>> 0;
    let t = state.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Derives an independent stream seed from the user seed.
 *
 * @param seed The user's seed.
 * @param stream Which stream.
 * @returns The stream's seed.
 */
export function derive(seed: number, stream: number): number {
  let h = (seed ^ Math.imul(stream, 0x9e3779b9)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * A standard normal sample (Box-Muller).
 *
 * @param rand A uniform source in [0, 1).
 * @returns The sample.
 */
export function gaussian(rand: () => number): number {
  const u = 1 - rand();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
}

/**
 * Two interleaved spirals, 1.5 turns each, coordinates in about [-6, 6],
 * shuffled once.
 *
 * @param samples Number of points.
 * @param seed The user's seed.
 * @returns Coordinates (x0, y0, x1, y1, ...) and labels.
 */
export function twoSpirals(
  samples: number,
  seed: number,
): { x: Float32Array; y: Uint8Array } {
  const rand = mulberry32({ s: derive(seed, 1) });
  const x = new Float32Array(samples * INPUTS);
  const y = new Uint8Array(samples);
  const maxAngle = 3 * Math.PI;
  for (let i = 0; i < samples; i++) {
    const label = i % 2;
    const angle = Math.sqrt(rand()) * maxAngle + 0.5;
    const sign = label === 0 ? 1 : -1;
    const r = RADIUS * angle / (maxAngle + 0.5);
    x[i * 2] = sign * -Math.cos(angle) * r + gaussian(rand) * NOISE;
    x[i * 2 + 1] = sign * Math.sin(angle) * r + gaussian(rand) * NOISE;
    y[i] = label;
  }
  // Shuffle once so the split takes both classes from every radius.
  for (let i = samples - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const x0 = x[i * 2]!, x1 = x[i * 2 + 1]!, yi = y[i]!;
    x[i * 2] = x[j * 2]!;
    x[i * 2 + 1] = x[j * 2 + 1]!;
    y[i] = y[j]!;
    x[j * 2] = x0;
    x[j * 2 + 1] = x1;
    y[j] = yi;
  }
  return { x, y };
}
