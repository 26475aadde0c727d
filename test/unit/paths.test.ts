import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { baseName, isTempName, parentOf, recoverLinkTarget, tempNameFor } from '../../src/util/paths.js';

const bytes = (s: string) => Buffer.byteLength(s, 'utf8');
/** A name of exactly n bytes of UTF-8 made of `unit` repeated, padded with ASCII. */
const nameOf = (n: number, unit = 'a'): string => {
  const u = bytes(unit);
  const reps = Math.floor(n / u);
  return unit.repeat(reps) + 'x'.repeat(n - reps * u);
};

describe('tempNameFor / isTempName', () => {
  const sizes = [1, 200, 235, 236, 250, 255];
  const units = ['a', 'é', '€', '😀', 'ü\u0308'];

  for (const unit of units) {
    it(`names of ${sizes.join(', ')} bytes made of ${JSON.stringify(unit)}: temp within 255 bytes, recognised, same directory`, () => {
      for (const n of sizes) {
        const name = nameOf(n, unit);
        expect(bytes(name)).toBe(n);
        for (const dir of ['', 'd', 'deep/er']) {
          const rel = dir ? `${dir}/${name}` : name;
          const tmp = tempNameFor(rel);
          expect(parentOf(tmp)).toBe(dir);
          const base = baseName(tmp);
          expect(bytes(base), `${n} bytes of ${unit}`).toBeLessThanOrEqual(255);
          expect(isTempName(base)).toBe(true);
          // No broken characters: the name survives a UTF-8 round trip.
          expect(Buffer.from(base, 'utf8').toString('utf8')).toBe(base);
          expect(base).not.toContain('\ufffd');
        }
      }
    });
  }

  it('short names keep today\'s form: .<name>.wsync-xxxxxxxx.tmp', () => {
    expect(tempNameFor('a.txt')).toMatch(/^\.a\.txt\.wsync-[0-9a-f]{8}\.tmp$/);
    const name235 = nameOf(235);
    expect(baseName(tempNameFor(`d/${name235}`))).toMatch(new RegExp(`^\\.${name235}\\.wsync-[0-9a-f]{8}\\.tmp$`));
    expect(bytes(tempNameFor(name235))).toBe(255);
  });

  it('long names get a prefix of the name, cut at a character boundary', () => {
    const long = nameOf(250);
    const t = tempNameFor(long);
    expect(t.startsWith('.' + long.slice(0, 100))).toBe(true);
    expect(bytes(t)).toBeLessThanOrEqual(255);
    // Two temps of one name differ.
    expect(tempNameFor(long)).not.toBe(t);
    const emoji = nameOf(252, '😀');
    const te = tempNameFor(emoji);
    expect(bytes(te)).toBeLessThanOrEqual(255);
    expect(te.slice(1).startsWith('😀'.repeat(10))).toBe(true);
  });

  it('names longer than 255 bytes (another system\'s) still get a temp the server can create', () => {
    for (const n of [256, 300, 765]) {
      const t = tempNameFor(nameOf(n, '€'));
      expect(bytes(t)).toBeLessThanOrEqual(255);
      expect(isTempName(t)).toBe(true);
    }
  });

  it('recognises the temp of a name holding a newline (any character but / and NUL is allowed)', () => {
    expect(isTempName(tempNameFor('a\nb'))).toBe(true);
    expect(isTempName(tempNameFor('\n'))).toBe(true);
  });

  it('does not match ordinary names', () => {
    for (const name of ['a.txt', '.hidden', '.a.wsync-1234567.tmp', '.a.wsync-123456789.tmp', 'a.wsync-12345678.tmp', '.a.wsync-1234567g.tmp', '.a.wsync-12345678.tmp~', '.wsync-12345678.tmp', '..wsync-12345678.tmp.x', '~.wsync-12345678.tmp']) {
      expect(isTempName(name), name).toBe(false);
    }
  });

  it('every temp of every name is recognised and fits (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom('a', '.', 'é', '€', '😀', 'e\u0301', '~'), { minLength: 1, maxLength: 300, size: 'max' }), fc.string({ unit: 'grapheme', maxLength: 40 }), (parts, g) => {
        const name = (g + parts.join('')).replace(/[/\0]/g, '_') || 'x';
        const t = tempNameFor(name);
        return isTempName(t) && bytes(t) <= 255 && (bytes(name) > 235 || t.startsWith(`.${name}.wsync-`));
      }),
      { numRuns: 500 },
    );
  });
});

describe('recoverLinkTarget (a server that reads a link back joined onto its directory)', () => {
  it('takes what wsync wrote where it resolves to the answer, normalised as servers answer', () => {
    expect(recoverLinkTarget('/r/d', '/r/d/t.txt', 't.txt')).toBe('t.txt');
    expect(recoverLinkTarget('/r/d', '/r/t.txt', '../t.txt')).toBe('../t.txt');
    expect(recoverLinkTarget('/r/d', '/r/d/sub', 'sub/')).toBe('sub/');
    expect(recoverLinkTarget('/r/d', '/r/d/sub', './sub')).toBe('./sub');
    expect(recoverLinkTarget('/r/d', '/etc/hostname', '/etc/hostname')).toBe('/etc/hostname');
    expect(recoverLinkTarget('/r/d', '/etc/hostname', '/etc//hostname')).toBe('/etc//hostname');
  });
  it('anything else cannot be told', () => {
    expect(recoverLinkTarget('/r/d', '/r/d/t.txt', undefined)).toBeUndefined();
    expect(recoverLinkTarget('/r/d', '/r/d/t.txt', 'u.txt')).toBeUndefined();
    expect(recoverLinkTarget('/r/d', '/r/d/t.txt', '/r/d/u.txt')).toBeUndefined();
  });
});
