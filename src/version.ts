import { readFileSync } from 'node:fs';

/** The version in package.json (dist/version.js sits one level below it, as src/version.ts does). */
export const WSYNC_VERSION: string = (() => {
  try {
    return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
})();
