import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The CLI tests run bin/wsync.js, which loads dist/: build it once per test run. */
export default function setup(): void {
  // The chunk cache of every push the suite makes goes to a throwaway directory, not the user's ~/.cache.
  process.env.XDG_CACHE_HOME = mkdtempSync(join(tmpdir(), 'wsync-test-cache-'));
  // For quick runs of suites that do not spawn the CLI.
  if (process.env.WSYNC_SKIP_BUILD) return;
  execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'], { stdio: 'inherit' });
}
