#!/usr/bin/env node
// A bigger libuv pool before anything touches it: scanning a tree is thousands of lstat calls at once.
process.env.UV_THREADPOOL_SIZE ??= '16';
const { main } = await import('../dist/cli/main.js');

// A reader that went away (`wsync … | head`) is not an error of the run: stop writing, keep the exit code.
for (const s of [process.stdout, process.stderr]) s.on('error', () => undefined);

/**
 * Exits once everything written to stdout and stderr has been handed to the OS: on a pipe Node writes
 * asynchronously, and process.exit() with writes pending cut `--json | jq` output short. Not waiting for anything
 * else: main() has already awaited every remote operation, and the SSH socket's orderly close would only add round
 * trips.
 */
function exitAfterOutput(code) {
  settled = true;
  process.exitCode = code;
  let left = 2;
  const done = () => {
    if (--left === 0) process.exit(code);
  };
  for (const s of [process.stdout, process.stderr]) {
    if (s.destroyed || !s.writable) done();
    else s.write('', done);
  }
}

// The event loop must never drain before main() has settled: that happened when requests to a dead connection were
// never answered, and the process then exited 0 on a half-copied tree.
let settled = false;
process.on('beforeExit', () => {
  if (settled) return;
  settled = true;
  process.stderr.write('wsync: internal error: the run stopped without finishing (nothing was left to wait for); the result is incomplete\n');
  process.exit(2);
});

main(process.argv.slice(2)).then(exitAfterOutput, (err) => {
  process.stderr.write(`wsync: internal error: ${err?.stack ?? err}\n`);
  exitAfterOutput(1);
});
