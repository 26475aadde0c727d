/**
 * Rebuilds started before the run knows it wants them. A push must take the lock, read the manifest and list the
 * remote before it can plan, three round trips; on a link with 50 ms of latency that is as long as the server
 * takes to copy 100 MB. For a big file that changed locally since the last run, the chunk cache already knows what
 * the target held (path, size, mtime, content) and what the file holds now (cut while connecting), so its rebuild
 * can start right away under a temp name; nothing reaches the server before the lock is ours. The plan later
 * adopts a staged rebuild only when the manifest and the listing confirm the old version it was built from and
 * the local file is still the one that was cut; everything else is removed unseen (temp names are invisible to
 * the sync and are never renamed in without that confirmation).
 */
import type { Entry } from '../types.js';
import type { FileReader, StagedFile, Transport, WriteMeta } from '../transport/types.js';
import { sameSpec, specForUpdate, type ChunkerSpec } from '../chunking/params.js';
import { DELTA_MIN_FILE_SIZE, planDelta, validateDelta, type DeltaPlan } from '../plan/delta.js';
import { onInterrupt } from '../util/interrupt.js';
import { baseName, tempNameFor } from '../util/paths.js';
import type { ChunkCache, ChunkList } from './chunkcache.js';
import { toChunkRefs } from './chunkcache.js';
import { verifiedLiterals } from './delta.js';

/** At most this many files at once: each holds an SFTP channel while it is staged. */
const MAX_SPECULATIONS = 4;

export interface Speculation {
  readonly rel: string;
  /** The temp file's path (relative to the root): the run must not take it for another run's leftover. */
  readonly temp: string;
  /** The remote version the copies come from. */
  readonly old: { sha256: string; size: number; mtime: number; spec: ChunkerSpec };
  /** The local file as cut: its stamp, chunk list and the metadata given to the new remote file. */
  readonly stamp: string;
  readonly cur: ChunkList;
  readonly meta: WriteMeta;
  readonly delta: DeltaPlan;
  readonly staged: Promise<StagedFile>;
  /**
   * The staged file was complete before the plan asked for it: its last check of the old file may be long past,
   * so the old file must be checked again before the rename (otherwise the rename follows that check by one round
   * trip, as in an ordinary rebuild).
   */
  readonly recheck: boolean;
}

export class Speculations {
  private readonly byPath = new Map<string, { s: Speculation; reader: FileReader; unhook: () => void; done: boolean }>();
  private stopped = false;
  private discarding: Promise<unknown> = Promise.resolve();

  /**
   * No new ones from now on: the run has planned (a rebuild started later could not be adopted) or is giving up.
   * The set of staged ones is final once this is called.
   */
  stop(): void {
    this.stopped = true;
  }

  /** Temps of staged rebuilds, relative to the root. */
  temps(): Set<string> {
    return new Set([...this.byPath.values()].map((x) => x.s.temp));
  }

  /** Local files with a staged rebuild and their new content's SHA-256 (known before the plan, unlike most). */
  *contents(): IterableIterator<[string, { stamp: string; sha256: string; size: number; mtime: number }]> {
    for (const [rel, { s }] of this.byPath) yield [rel, { stamp: s.stamp, sha256: s.cur.sha256, size: s.meta.size, mtime: s.meta.mtime }];
  }

  /**
   * The staged rebuild of `rel` if it fits what the run found: `base` (the manifest's entry) and `dst` (the
   * listing) name the version it copies from, `src` (the scan) the local file it was built for, cut with `spec`.
   * Handed over at most once; one that does not fit is left for discardAll.
   */
  take(rel: string, base: Entry | undefined, dst: Entry | undefined, src: Entry, spec: ChunkerSpec): Speculation | undefined {
    const x = this.byPath.get(rel);
    if (!x) return undefined;
    const { s } = x;
    const fits =
      base?.type === 'file' && base.sha256 === s.old.sha256 && base.size === s.old.size && base.mtime === s.old.mtime &&
      dst?.type === 'file' && dst.size === s.old.size && dst.mtime === s.old.mtime &&
      sameSpec(spec, s.old.spec) &&
      src.type === 'file' && src.size === s.meta.size && src.mtime === s.meta.mtime && src.mode === s.meta.mode &&
      (src.sha256 === undefined || src.sha256 === s.cur.sha256);
    if (!fits) return undefined;
    this.byPath.delete(rel);
    x.unhook();
    void x.s.staged.then(() => x.reader.close(), () => x.reader.close()).catch(() => undefined);
    return { ...s, recheck: x.done };
  }

  /** Stops, and removes every staged rebuild not taken; resolves when they are gone (also those of earlier calls). */
  async discardAll(): Promise<void> {
    this.stop();
    const all = [...this.byPath.values()];
    this.byPath.clear();
    const now = Promise.all(
      all.map(async ({ s, reader, unhook }) => {
        unhook();
        await s.staged.then((st) => st.abort(), () => undefined);
        await reader.close().catch(() => undefined);
      }),
    );
    this.discarding = Promise.all([this.discarding, now]);
    await this.discarding;
  }

  /**
   * Stages the rebuild of each big file the cache says the target holds and that changed locally since, until
   * stop(). Copies and writes wait for `gate` (the lock). Best effort: anything unexpected just means no
   * speculation for a file.
   */
  async start(local: Transport, remote: Transport, cache: ChunkCache, gate: Promise<unknown>, maxCopyLength: number): Promise<void> {
    for (const [rel, old] of cache.remoteFiles()) {
      if (this.stopped || this.byPath.size >= MAX_SPECULATIONS) break;
      await this.startOne(local, remote, cache, gate, maxCopyLength, rel, old).catch(() => undefined);
    }
  }

  private async startOne(
    local: Transport,
    remote: Transport,
    cache: ChunkCache,
    gate: Promise<unknown>,
    maxCopyLength: number,
    rel: string,
    old: { size: number; mtime: number; list: ChunkList },
  ): Promise<void> {
    // Only a file the cache has cut in exactly this version (the prewarm does that for changed ones): the literals
    // are checked against its chunk ids, and the copies are only right if the rest of the file is what it says.
    // An unchanged file costs one lstat here.
    const spec = old.list.spec;
    const stamp = await local.stamp(rel);
    const cur = stamp ? cache.fileContent(rel, stamp, spec) : undefined;
    if (!cur || cur.sha256 === old.list.sha256 || cur.size < DELTA_MIN_FILE_SIZE || !sameSpec(specForUpdate(spec, cur.size), spec)) return;
    const st = await local.lstat(rel);
    if (st?.type !== 'file' || st.size !== cur.size) return;
    const reader = await local.openReader(rel);
    let kept = false;
    try {
      if (reader.stamp !== stamp || reader.size !== cur.size) return;
      const chunks = toChunkRefs(cur);
      const delta = planDelta(toChunkRefs(old.list), chunks, { maxCopyLength });
      if (!delta.worthIt) return;
      validateDelta(delta.ops, old.size, st.size);
      if (this.stopped) return;
      const meta = { mode: st.mode, mtime: st.mtime, size: st.size };
      const temp = tempNameFor(rel);
      const literal = verifiedLiterals(reader, chunks, local.describe(rel), () => undefined);
      const staged = remote.stageRebuild(rel, { size: old.size, mtime: old.mtime }, delta.ops, literal, meta, { gate, tempName: baseName(temp) });
      staged.catch(() => undefined);
      // Ctrl-C while it is staged: the temp goes with the lock.
      const unhook = onInterrupt(() => staged.then((f) => f.abort(), () => undefined));
      const s: Speculation = { rel, temp, old: { sha256: old.list.sha256, size: old.size, mtime: old.mtime, spec }, stamp, cur, meta, delta, staged, recheck: false };
      const entry = { s, reader, unhook, done: false };
      void staged.then(() => (entry.done = true), () => undefined);
      this.byPath.set(rel, entry);
      kept = true;
    } finally {
      if (!kept) await reader.close();
    }
  }
}
