import { Worker } from 'node:worker_threads';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Transport } from '../transport/types.js';
import type { ChunkedFile } from '../chunking/hash.js';
import { sameSpec, specForUpdate, type ChunkerSpec } from '../chunking/params.js';
import { DELTA_MIN_FILE_SIZE } from '../plan/delta.js';
import { ChunkCache, fromChunked } from './chunkcache.js';

const WORKER = fileURLToPath(new URL('./chunk-worker.js', import.meta.url));

function chunkInWorker(path: string, spec: ChunkerSpec): Promise<ChunkedFile> {
  return new Promise((resolve, reject) => {
    const w = new Worker(WORKER, { workerData: { path, spec } });
    w.once('message', (m: { ok: boolean; chunked?: ChunkedFile; message?: string }) => {
      void w.terminate();
      if (m.ok && m.chunked) resolve(m.chunked);
      else reject(new Error(m.message ?? 'chunking failed'));
    });
    w.once('error', reject);
  });
}

/**
 * Cuts the big local files that changed since the cache last saw them, while the SSH connection is still being
 * set up: chunking is CPU work and connecting is mostly waiting, so a changed big file's delta is ready when the
 * engine asks for it. The cutting runs in a worker thread, so the handshake on the main thread is not held up.
 * Only files the cache already knows qualify (a delta needs their previous chunk list anyway),
 * and each is cut with the spec it had, which is the spec its manifest entry records. Best effort: any failure
 * just leaves the work to the engine.
 */
export async function prewarmChunks(local: Transport, cache: ChunkCache): Promise<void> {
  // Only the compiled build has the worker's .js next to this file (tests run the TypeScript sources).
  if (!existsSync(WORKER)) return;
  for (const { rel, stamp, list } of [...cache.knownFiles()]) {
    try {
      const now = await local.stamp(rel);
      if (!now || now === stamp) continue;
      const st = await local.lstat(rel);
      if (st?.type !== 'file' || st.size < DELTA_MIN_FILE_SIZE || !sameSpec(specForUpdate(list.spec, st.size), list.spec)) continue;
      const cut = fromChunked(await chunkInWorker(local.describe(rel), list.spec));
      // Kept only if the file did not change while it was read: the list must describe one version.
      if ((await local.stamp(rel)) === now && cut.size === st.size) cache.addFile(rel, now, cut);
    } catch {
      // The engine reads the file again and reports what is wrong with it.
    }
  }
}
