/**
 * Golden vectors: fixed inputs → committed cut points and chunk ids. Every chunk id stored in any manifest depends
 * on this exact behaviour, so this test must fail on any change to the chunker, the Gear table or the id hash.
 * If the change is intentional, it needs a new CHUNKER_ID; generate its fixture with
 *   WSYNC_UPDATE_GOLDEN=1 npx vitest run src/chunking/golden
 * (which writes only missing fixtures) and commit it alongside the id bump. Every id this build still reproduces
 * keeps its fixture and is tested here.
 *
 * Inputs are produced by Marsaglia's xorshift32 (x ^= x << 13; x ^= x >>> 17; x ^= x << 5, all mod 2^32), each
 * state after a step written as 4 little-endian bytes, truncated to the requested length. `inputSha256` in the
 * fixture pins the generator separately from the chunker, so a failure says which of the two moved.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { gearTable } from './fastcdc.js';
import { chunkBuffer } from './hash.js';
import { CHUNKER_ID, type ChunkerSpec } from './params.js';
import { xorshiftBytes } from '../../test/support/xorshift.js';

/** Ids this build reproduces; older ones stay so that specs recorded in manifests keep matching. */
const IDS = ['fastcdc-gear32-v1', CHUNKER_ID];

interface GoldenCase {
  name: string;
  input: string;
  spec: ChunkerSpec;
  inputLength: number;
  inputSha256: string;
  fileSha256: string;
  cuts: number[];
  ids: string[];
}

interface GoldenFile {
  chunker: string;
  generator: string;
  gearTableSha256: string;
  cases: GoldenCase[];
}

const KiB = 1024;
/** Each case: a description (kept in the fixture), its input, and its spec. */
const cases = (id: string): { name: string; input: string; make: () => Buffer; spec: ChunkerSpec }[] => {
  const spec = (avg: number, min = avg / 4, max = avg * 4): ChunkerSpec => ({ id, min, avg, max });
  return [
  {
    name: 'random-4MiB-avg16K',
    input: 'xorshift32(seed=0x9E3779B9), 4 MiB',
    make: () => xorshiftBytes(0x9e3779b9, 4 << 20),
    spec: spec(16 * KiB),
  },
  {
    name: 'mixed-256KiB-avg1K',
    input: 'xorshift32(seed=42) 96 KiB ‖ zeros 64 KiB ‖ (xorshift32(seed=43) 96 KiB, each byte & 3)',
    make: () =>
      Buffer.concat([
        xorshiftBytes(42, 96 * KiB),
        Buffer.alloc(64 * KiB),
        xorshiftBytes(43, 96 * KiB).map((b) => b & 3),
      ]),
    spec: spec(1024),
  },
  {
    name: 'random-12MiB-avg256K-odd-length',
    input: 'xorshift32(seed=7), 12 MiB + 333 bytes',
    make: () => xorshiftBytes(7, (12 << 20) + 333),
    spec: spec(256 * KiB),
  },
  ];
};

function gearSha(): string {
  const b = Buffer.alloc(1024);
  gearTable().forEach((v, i) => b.writeUInt32BE(v, i * 4));
  return createHash('sha256').update(b).digest('hex');
}

function compute(id: string): GoldenFile {
  return {
    chunker: id,
    generator: 'xorshift32 (13,17,5), each state after a step as 4 little-endian bytes',
    gearTableSha256: gearSha(),
    cases: cases(id).map(({ name, input, make, spec: s }) => {
      const data = make();
      const r = chunkBuffer(data, s);
      return {
        name,
        input,
        spec: s,
        inputLength: data.length,
        inputSha256: createHash('sha256').update(data).digest('hex'),
        fileSha256: r.sha256,
        cuts: r.chunks.map((c) => c.offset + c.length),
        ids: r.chunks.map((c) => c.id),
      };
    }),
  };
}

for (const id of IDS) {
  describe(`golden chunking vectors: ${id}`, () => {
    const fixtureUrl = new URL(`../../fixtures/chunking/${id}.json`, import.meta.url);
    const actual = compute(id);

    if (process.env.WSYNC_UPDATE_GOLDEN === '1' && !existsSync(fileURLToPath(fixtureUrl))) {
      writeFileSync(fixtureUrl, `${JSON.stringify(actual, null, 1)}\n`);
    }

    it('has a committed fixture', () => {
      expect(existsSync(fileURLToPath(fixtureUrl)), `fixtures/chunking/${id}.json missing`).toBe(true);
    });

    const expected = existsSync(fileURLToPath(fixtureUrl))
      ? (JSON.parse(readFileSync(fixtureUrl, 'utf8')) as GoldenFile)
      : undefined;

    it('pins the chunker id and Gear table', () => {
      expect(expected?.chunker).toBe(actual.chunker);
      expect(actual.gearTableSha256, 'Gear table changed').toBe(expected?.gearTableSha256);
    });

    for (const c of actual.cases) {
      it(`reproduces ${c.name}`, () => {
        const e = expected?.cases.find((x) => x.name === c.name);
        expect(e, `case ${c.name} missing from fixture`).toBeDefined();
        expect(c.inputSha256, 'test input generator changed, not the chunker').toBe(e!.inputSha256);
        expect(c.spec).toEqual(e!.spec);
        expect(c.cuts).toEqual(e!.cuts);
        expect(c.ids).toEqual(e!.ids);
        expect(c.fileSha256).toBe(e!.fileSha256);
        expect(c.cuts.length).toBeGreaterThan(5);
      });
    }
  });
}
