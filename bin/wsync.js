#!/usr/bin/env node
// A bigger libuv pool before anything touches it: scanning a tree is thousands of lstat calls at once.
process.env.UV_THREADPOOL_SIZE ??= '16';
const { main } = await import('../dist/cli/main.js');

// Exit as soon as the work is done: main() has already awaited every remote operation and written its output,
// and waiting for the SSH socket's orderly close would only add round trips.
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`wsync: internal error: ${err?.stack ?? err}\n`);
    process.exit(1);
  },
);
