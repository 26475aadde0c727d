/**
 * The latency overlaps of a run, by name: what goes on the wire beside or right behind something else so that a
 * round trip is not paid on its own. runSync (engine.ts) uses them; a watch batch, with the lock and the manifest
 * held by its session, needs none of them.
 */
import type { Tree } from '../types.js';
import type { ExclusiveFile, Transport } from '../transport/types.js';
import { acquireLock, type Lock, type LockOptions } from '../manifest/lock.js';
import { encodeManifest, readManifest, writeManifest, MANIFEST_PATH, type Manifest } from '../manifest/manifest.js';
import { onInterrupt } from '../util/interrupt.js';
import { mapLimit } from '../util/limit.js';
import { tempNameFor } from '../util/paths.js';
import { specForUpdate } from '../chunking/params.js';
import { DELTA_MIN_FILE_SIZE } from '../plan/delta.js';
import type { Plan } from '../plan/plan.js';
import { hashFile } from './verify.js';

/** Limits of the extra local read that lets the final manifest be written ahead (see prewriteManifest). */
const PREDICT_MAX_FILES = 2000;
const PREDICT_MAX_BYTES = 32 * 2 ** 20;

export interface LockedStart {
  /** The lock (undefined on a dry run, which takes none). */
  lock: Promise<Lock> | undefined;
  /** The manifest as the lock protects it: the read that went right behind the lock when it was taken at once. */
  manifest(lock: Lock | undefined): Promise<Manifest | null>;
  /** The new manifest's temp file, created as soon as the lock is held (null: could not be). */
  tmp: Promise<ExclusiveFile | null> | undefined;
  tmpName: string;
  /** Forgets the temp's undo step (once the run is over). */
  done(): void;
}

/**
 * The lock, and right behind it on one channel (sftp-server answers a channel's requests in the order they arrive)
 * the manifest read: when the first create takes the lock, the read saw what the lock protects, one round trip
 * sooner; otherwise (waited for or broken; a local target, whose requests have no order) it is read again. Once the
 * lock is held, the new manifest's temp is created while the listings are under way, so that the end needs only
 * its data and the rename. Not before the lock: the run holding it would take the temp for a leftover of a killed
 * run and remove it (with --wait, the manifest of one run then mixed with another's).
 */
export function startLocked(remote: Transport, o: LockOptions & { dryRun: boolean; noTemp?: boolean }): LockedStart {
  const tmpName = tempNameFor(MANIFEST_PATH);
  if (o.dryRun) return { lock: undefined, manifest: () => readManifest(remote), tmp: undefined, tmpName, done: () => undefined };
  const pin = remote.pinned?.();
  const lock = acquireLock(pin ?? remote, o);
  lock.catch(() => undefined);
  const early = pin ? readManifest(pin) : undefined;
  early?.catch(() => undefined);
  let forget: (() => void) | undefined;
  const tmp = pin && !o.noTemp
    ? lock.then(() => pin.openExclusive(tmpName)).then(
        (f) => {
          // Ctrl-C removes it with the lock; only a killed run leaves it behind, and the next run removes it.
          if (f) forget = onInterrupt(async () => void (await f.abort()));
          return f;
        },
        () => null,
      )
    : undefined;
  return {
    lock,
    manifest: (l) => (early && l?.firstTry ? early : readManifest(remote)),
    tmp,
    tmpName,
    done: () => forget?.(),
  };
}

/**
 * Checkpoints: what is true right now (`current()`) written as the manifest every few seconds, so that a run killed
 * mid-way costs the next one only the last few seconds of work. Building and compressing one is main-thread work
 * (~0.8 s for 100,000 entries): spaced out to at least 20 times its cost, never more than ~5 % of the run.
 */
export function startCheckpoints(remote: Transport, current: () => Tree, writer: Record<string, unknown>): { stop(): Promise<void> } {
  let writing: Promise<void> | undefined;
  let next = 0;
  const timer = setInterval(() => {
    if (writing || Date.now() < next) return;
    const t0 = Date.now();
    writing = writeManifest(remote, { entries: current() }, writer)
      .catch(() => undefined)
      .finally(() => (writing = undefined));
    next = Date.now() + 20 * (Date.now() - t0);
  }, 3000);
  timer.unref();
  return {
    stop: async () => {
      clearInterval(timer);
      await writing;
    },
  };
}

export interface Prewrite {
  /** A transfer's data has all been sent (or it is done with). */
  sent(rel: string): void;
  /** The manifest written into the temp, or undefined when there was none to write ahead. */
  result: Promise<Tree | undefined>;
  /** Something was written into the temp (it cannot be given other data any more). */
  readonly wrote: boolean;
}

/**
 * The manifest written ahead: when every file to be sent has a known hash, the manifest the run will end with is
 * known before the files arrive; written into its temp meanwhile, it needs only the rename at the end (a round
 * trip less), provided everything went as planned. Files whose hash the plan does not know are hashed for this on a
 * push when they are few and small (a local read beside the transfers; a file that changes in between only voids
 * the prediction). It is sent once the transfers' data has gone, before their answers are back: it is
 * incompressible, and ahead of text files it would switch SSH compression to stored for them.
 */
export function prewriteManifest(i: { plan: Plan; base: Tree; srcTree: Tree; local: Transport; push: boolean; tmp: Promise<ExclusiveFile | null> | undefined; writer: Record<string, unknown> }): Prewrite {
  const p = i.plan;
  const unsent = new Set(p.transfers.map((op) => op.path));
  let allSent!: () => void;
  const allSentP = new Promise<void>((r) => (allSent = r));
  if (unsent.size === 0) allSent();
  const state = { wrote: false };
  const result = (async (): Promise<Tree | undefined> => {
    // Nothing to overlap without transfers (a no-op run of a big tree should not pay for copies and compares).
    if (p.transfers.length === 0) return undefined;
    const unknown = p.transfers.filter((op) => op.kind === 'put' && !op.entry.sha256).map((op) => op.path);
    const bytes = unknown.reduce((n, rel) => n + i.srcTree.get(rel)!.size, 0);
    if (unknown.length > 0 && (!i.push || unknown.length > PREDICT_MAX_FILES || bytes > PREDICT_MAX_BYTES)) return undefined;
    const hashes = new Map<string, string>();
    await mapLimit(unknown, 16, async (rel) => hashes.set(rel, await hashFile(i.local, rel, i.srcTree.get(rel)!.size)));
    const predicted = predictNext(p, i.base, hashes);
    if (!predicted) return undefined;
    const tmp = await i.tmp;
    if (!tmp) return undefined;
    await allSentP;
    state.wrote = true;
    await tmp.write(encodeManifest({ entries: predicted }, i.writer));
    return predicted;
  })().catch(() => undefined);
  return {
    sent: (rel) => {
      if (unsent.delete(rel) && unsent.size === 0) allSent();
    },
    result,
    get wrote() {
      return state.wrote;
    },
  };
}

/**
 * The manifest a run will write if every operation succeeds, or undefined while some file to be sent has no known
 * hash (most do not: they are hashed as they are sent). Mirrors what putWhole and putDelta record.
 */
function predictNext(p: Plan, base: Tree, hashes: Map<string, string>): Tree | undefined {
  const t: Tree = new Map(p.next);
  for (const op of p.transfers) {
    if (op.kind !== 'put') continue;
    const sha256 = op.entry.sha256 ?? hashes.get(op.path);
    if (!sha256) return undefined;
    const e = { ...op.entry, sha256 };
    t.set(op.path, e.size >= DELTA_MIN_FILE_SIZE ? { ...e, chunker: specForUpdate(base.get(op.path)?.chunker, e.size) } : e);
  }
  return t;
}
