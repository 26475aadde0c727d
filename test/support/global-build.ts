import { execFileSync } from 'node:child_process';

/** The CLI tests run bin/wsync.js, which loads dist/: build it once per test run. */
export default function setup(): void {
  // For quick runs of suites that do not spawn the CLI.
  if (process.env.WSYNC_SKIP_BUILD) return;
  execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'], { stdio: 'inherit' });
}
