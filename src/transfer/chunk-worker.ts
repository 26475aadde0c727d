/**
 * Worker entry: cuts one file off the main thread, so that chunking while SSH connects does not stall the
 * handshake (both would otherwise share the one JS thread).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { chunkFile } from '../chunking/hash.js';
import type { ChunkerSpec } from '../chunking/params.js';

const { path, spec } = workerData as { path: string; spec: ChunkerSpec };
chunkFile(path, { spec }).then(
  (chunked) => parentPort!.postMessage({ ok: true, chunked }),
  (err) => parentPort!.postMessage({ ok: false, message: String(err?.message ?? err) }),
);
