/**
 * A git repository as plain files, reached through a Transport. The server runs no git, so everything git would
 * do there (refs under lock files with compare-and-swap, objects, reflogs) is done here with the Transport's
 * atomic primitives, in the on-disk formats real git reads. The same code updates local refs, through a
 * LocalTransport, so those get git's locks and reflogs too.
 */
import { randomBytes } from 'node:crypto';
import { WsyncError } from '../errors.js';
import type { ExclusiveFile, Transport } from '../transport/types.js';
import { mapLimit } from '../util/limit.js';
import { ancestors } from '../util/paths.js';
import type { LockLedger } from './lockledger.js';
import { onInterrupt } from '../util/interrupt.js';
import { decodeLoose, encodeLoose, hashObject, isOid, type GitObject, type ObjectType } from './objects.js';
import { PackIndex, PackReader, type RandomAccess } from './pack.js';
import { configBool, parseGitConfig, parsePackedRefs, parseRefFile, type PackedRefs, type RefContent } from './refs.js';

export interface RepoLayout {
  /** Path of the git directory relative to the transport root: '.git', or '' for a bare repository. */
  gitDir: string;
  bare: boolean;
  config: Map<string, string>;
}

/**
 * Requests in flight for per-object work. Round trips dominate over SFTP, and the transport itself bounds what
 * each channel has in flight, so this is high: a few hundred small files cost one or two round trips, not ten.
 */
const PARALLEL = 512;

/** Age from which --break-lock removes a git lock file. */
export const STALE_LOCK_SECONDS = 60;

/** A git lock file wsync holds (kept open, as git does); released in `finally` by whoever took it. */
export class RefLock {
  private readonly forget: () => void;
  /** Taken after removing a lock file that was there first (left by a crash or a cut push). */
  retaken = false;
  constructor(
    private readonly repo: FileRepo,
    /** The file the lock guards, relative to the git dir. */
    readonly file: string,
    private readonly handle: ExclusiveFile,
  ) {
    // Interrupted with the lock held: remove it, or git on the other side stays locked out.
    this.forget = onInterrupt(async () => {
      if (await this.handle.abort()) this.repo.ledger?.done(this.repo.p(`${this.file}.lock`));
    });
  }
  /** Writes the new content into the lock, then (once `after` is done) renames it over the file: git's commit_lock_file. */
  async commit(content: Buffer, after?: Promise<unknown>): Promise<void> {
    try {
      // Its mtime moves with this write: written down again, so that a cut now still leaves it recognisable.
      this.repo.ledger?.taking(this.repo.p(`${this.file}.lock`));
      await this.handle.commit(content, this.repo.p(this.file), after);
      this.repo.ledger?.done(this.repo.p(`${this.file}.lock`));
    } finally {
      this.forget();
    }
  }
  async release(): Promise<void> {
    this.forget();
    // Not confirmed removed (the link went): it stays written down for the next push from here to remove.
    if (await this.handle.abort()) this.repo.ledger?.done(this.repo.p(`${this.file}.lock`));
  }
}

/** Objects in place under temp names: visible to git only after commit(). */
export interface StagedObjects {
  bytes: number;
  commit(): Promise<void>;
  abort(): Promise<void>;
  /** Blobs whose bytes sit as they are in the pack (stored zlib blocks), for building work tree files from it. */
  stored?: StoredBlobs;
}

export interface StoredBlobs {
  /** The pack once committed, relative to the transport's root. */
  pack: string;
  /** [offset, length] runs of each blob's bytes in that pack. */
  ranges: ReadonlyMap<string, ReadonlyArray<readonly [number, number]>>;
}

/**
 * git's own temp names in the object store: what a killed push leaves there is then what a killed git leaves, and
 * `git gc` (its prune) removes it after two weeks.
 */
function gitTempName(prefix: string): string {
  return prefix + randomBytes(6).toString('base64url');
}

/** Runs the jobs (at most PARALLEL at once) to the end, collecting what succeeded and the first failure. */
async function settleAll<T>(jobs: Array<() => Promise<T>>): Promise<{ ok: T[]; failed?: unknown }> {
  const ok: T[] = [];
  let failed: unknown;
  await mapLimit(jobs, PARALLEL, async (job) => {
    if (failed) return;
    try {
      ok.push(await job());
    } catch (err) {
      failed ??= err;
    }
  });
  return { ok, failed };
}

export class FileRepo {
  private packed?: Promise<PackedRefs>;
  /** Where the locks this machine takes here are written down (a push's remote repository; see LockLedger). */
  ledger?: LockLedger;
  constructor(
    readonly t: Transport,
    readonly layout: RepoLayout,
  ) {}

  get gitDir(): string {
    return this.layout.gitDir;
  }

  /** A path inside the git directory, relative to the transport root. */
  p(rel: string): string {
    return this.layout.gitDir ? `${this.layout.gitDir}/${rel}` : rel;
  }

  describe(rel = ''): string {
    return this.t.describe(this.p(rel));
  }

  /**
   * Finds the repository at the transport root: `<root>/.git`, or the root itself when it is a bare repository.
   * Null when there is none. Refuses repository formats this code would corrupt.
   */
  static async open(t: Transport): Promise<FileRepo | null> {
    // The common case, a work tree with a .git directory, in one round of requests.
    const [cfg, dotgit] = await Promise.all([t.readFile('.git/config').catch(() => null), t.lstat('.git')]);
    let layout: RepoLayout;
    if (dotgit?.type === 'dir') {
      layout = { gitDir: '.git', bare: false, config: parseGitConfig(cfg?.toString('utf8') ?? '') };
    } else if (dotgit?.type === 'file') {
      throw new WsyncError('E_GIT_UNSUPPORTED', `${t.describe('.git')} is a file (a linked worktree or submodule); wsync needs a .git directory`, {
        hint: 'push to the main work tree of that repository instead',
      });
    } else {
      const [head, config] = await Promise.all([t.lstat('HEAD'), t.readFile('config')]);
      if (dotgit || head?.type !== 'file' || !config) return null;
      const c = parseGitConfig(config.toString('utf8'));
      if (!configBool(c.get('core.bare'), false)) return null;
      layout = { gitDir: '', bare: true, config: c };
    }
    if (!layout.bare) layout.bare = configBool(layout.config.get('core.bare'), false);
    checkFormat(t, layout);
    return new FileRepo(t, layout);
  }

  /**
   * Creates a non-bare repository whose config lets real git trust what wsync writes: stat data without ctime,
   * inode or nanoseconds (checkStat=minimal, trustctime=false), and pushes into the checked-out branch.
   * HEAD is written last and exclusively: it is what makes git see a repository, and two racing inits then
   * leave one.
   */
  static async init(t: Transport, branch: string): Promise<FileRepo> {
    await t.ensureRoot();
    const config = [
      '[core]',
      '\trepositoryformatversion = 0',
      '\tfilemode = true',
      '\tbare = false',
      '\tlogallrefupdates = true',
      '\tcheckStat = minimal',
      '\ttrustctime = false',
      '[receive]',
      '\tdenyCurrentBranch = updateInstead',
      '',
    ].join('\n');
    const dirs = ['', 'objects', 'refs', 'info', 'logs', 'objects/pack', 'objects/info', 'refs/heads', 'refs/tags', 'logs/refs', 'logs/refs/heads'];
    // All exclusive: of two racing inits, each file comes from one of them, and both write the same.
    const files = (via: Transport) => [
      via.writeSmall('.git/config', Buffer.from(config), { exclusive: true }),
      via.writeSmall('.git/description', Buffer.from('Unnamed repository; edit this file to name it.\n'), { exclusive: true }),
      via.writeSmall('.git/HEAD', Buffer.from(`ref: refs/heads/${branch}\n`), { exclusive: true }),
    ];
    // On one SFTP channel the server handles requests in the order sent, parents before children and directories
    // before the files in them: everything in the time of one write. Where order is not kept, step by step.
    const view = t.pinned?.();
    let head: boolean;
    if (view) {
      const made = dirs.map((d) => view.mkdir(d ? `.git/${d}` : '.git', 0o755));
      const written = files(view);
      for (const w of written) w.catch(() => undefined);
      await Promise.all(made);
      head = (await Promise.all(written))[2];
    } else {
      for (const d of dirs) await t.mkdir(d ? `.git/${d}` : '.git', 0o755);
      head = (await Promise.all(files(t)))[2];
    }
    const repo = head ? new FileRepo(t, { gitDir: '.git', bare: false, config: parseGitConfig(config) }) : await FileRepo.open(t);
    if (!repo) throw new WsyncError('E_REMOTE_IO', `created a repository at ${t.describe('.git')} but cannot read it back`);
    return repo;
  }

  async readHead(): Promise<RefContent | null> {
    const data = await this.t.readFile(this.p('HEAD'));
    return data ? parseRefFile(data) : null;
  }

  /** Reads made speculatively alongside open(), before the layout was known; they stand until forget(). */
  prime(p: { packedRefs?: Buffer | null }): void {
    if (p.packedRefs !== undefined) this.packed = Promise.resolve(parsePackedRefs(p.packedRefs));
  }

  private packedRefs(): Promise<PackedRefs> {
    this.packed ??= this.t.readFile(this.p('packed-refs')).then(parsePackedRefs);
    return this.packed;
  }

  /** Loose shadows packed, as in git. Call `forget()` first when the value must be fresh (a CAS under lock). */
  async readRef(name: string): Promise<string | null> {
    const [loose, packed] = await Promise.all([this.t.readFile(this.p(name), { small: true }), this.packedRefs()]);
    if (loose) {
      const v = parseRefFile(loose);
      if (v?.oid) return v.oid;
      if (v?.symref) return this.readRef(v.symref);
      throw new WsyncError('E_GIT_CORRUPT', `${this.describe(name)} does not hold an object id`);
    }
    return packed.refs.get(name) ?? null;
  }

  async listPackedRefs(): Promise<PackedRefs> {
    return this.packedRefs();
  }

  forget(): void {
    this.packed = undefined;
  }

  /** Every ref under refs/ (loose and packed) with its value, and tags' peeled commits where packed-refs has them. */
  async listRefs(): Promise<{ refs: Map<string, string>; peeled: Map<string, string> }> {
    const refs = new Map<string, string>();
    const loose = new Map<string, string>();
    const walk = async (dir: string): Promise<void> => {
      const entries = await this.t.readdir(this.p(dir));
      if (!entries) return;
      await Promise.all(
        entries.map(async ({ name, entry }) => {
          if (name.startsWith('.') || name.endsWith('.lock')) return;
          const rel = `${dir}/${name}`;
          if (entry.type === 'dir') return walk(rel);
          if (entry.type !== 'file') return;
          const data = await this.t.readFile(this.p(rel));
          const v = data && parseRefFile(data);
          if (v?.oid) loose.set(rel, v.oid);
        }),
      );
    };
    const [packed] = await Promise.all([this.packedRefs(), walk('refs')]);
    for (const [k, v] of packed.refs) refs.set(k, v);
    for (const [k, v] of loose) refs.set(k, v);
    return { refs, peeled: packed.peeled };
  }

  /**
   * Takes `<file>.lock` the way git does (O_EXCL create). A lock that exists belongs to a git process on the
   * server, or to one that crashed: either way it is not ours to remove.
   */
  async lock(file: string, opts: { breakStale?: boolean } = {}): Promise<RefLock> {
    return this.takeLock(file, () => this.withParents(`${file}.lock`, () => this.t.openExclusive(this.p(`${file}.lock`))), opts);
  }

  /** lock() without creating missing directories: for a guess at the layout that must not leave traces. */
  async lockHere(file: string, opts: { breakStale?: boolean } = {}): Promise<RefLock> {
    return this.takeLock(file, () => this.t.openExclusive(this.p(`${file}.lock`)), opts);
  }

  private async takeLock(file: string, open: () => Promise<ExclusiveFile | null>, opts: { breakStale?: boolean }): Promise<RefLock> {
    const lockPath = this.p(`${file}.lock`);
    this.ledger?.taking(lockPath);
    // The lock file exists on the server before its handle is back here: an interrupt in between must remove it too.
    let opening = open();
    const undo = (o: Promise<ExclusiveFile | null>) => async () => {
      if (await (await o.catch(() => null))?.abort()) this.ledger?.done(lockPath);
    };
    let forget = onInterrupt(undo(opening));
    let handle = await opening.finally(forget).catch((err) => {
      // Lost with the link, the lock may exist there: it stays written down, for the next push to remove.
      if (!(err instanceof WsyncError && err.code === 'E_REMOTE_LOST')) this.ledger?.done(lockPath);
      throw err;
    });
    // Left by a push from here whose link was cut (its process is gone, the file no younger than its last write):
    // ours to remove.
    const retaken = !handle;
    const left = !handle && this.ledger ? await this.t.lstat(lockPath).catch(() => null) : null;
    if (left && this.ledger?.leftByDeadRun(lockPath, left.mtime)) {
      await this.t.remove(lockPath, 'file').catch(() => undefined);
      this.ledger.forgetDead(lockPath);
      opening = open();
      forget = onInterrupt(undo(opening));
      handle = await opening.finally(forget);
    }
    if (!handle && opts.breakStale && (await this.breakIfStale(file))) {
      opening = open();
      forget = onInterrupt(undo(opening));
      handle = await opening.finally(forget);
    }
    if (handle) {
      // Taken: whatever a dead run wrote down for this lock is moot.
      this.ledger?.forgetDead(lockPath);
      const l = new RefLock(this, file, handle);
      l.retaken = retaken;
      return l;
    }
    this.ledger?.done(lockPath);
    const st = await this.t.lstat(this.p(`${file}.lock`)).catch(() => null);
    const age = st ? Math.max(0, Math.floor(Date.now() / 1000) - st.mtime) : undefined;
    const young = opts.breakStale ? `; --break-lock removes only locks older than ${STALE_LOCK_SECONDS} s` : '';
    return Promise.reject(
      new WsyncError('E_LOCKED', `${this.describe(`${file}.lock`)} exists${age !== undefined ? ` (${formatAge(age)} old)` : ''}: another git process is using the repository${young}`, {
        hint: 'wait for it to finish; if no git process is running there (a crash left it), run again with --break-lock',
      }),
    );
  }

  /**
   * A lock older than STALE_LOCK_SECONDS is taken to be left by a crash: git holds its locks for moments, wsync for
   * one push. Younger ones are never removed.
   */
  private async breakIfStale(file: string): Promise<boolean> {
    const st = await this.t.lstat(this.p(`${file}.lock`));
    if (!st || Math.floor(Date.now() / 1000) - st.mtime < STALE_LOCK_SECONDS) return false;
    await this.t.remove(this.p(`${file}.lock`), 'file');
    return true;
  }

  async appendReflog(ref: string, line: Buffer): Promise<void> {
    await this.withParents(`logs/${ref}`, () => this.t.appendFile(this.p(`logs/${ref}`), line));
  }

  /** Runs `fn`, and once more after creating the parent directories of `rel` if it failed: they usually exist. */
  private async withParents<T>(rel: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      const parents = ancestors(rel);
      if (parents.length === 0) throw err;
      for (const d of parents) await this.t.mkdir(this.p(d), 0o755);
      return fn();
    }
  }

  // ---- objects in ----

  /**
   * Loose objects, as git's receive-pack writes them below its unpack limit, staged: written under temp names and
   * only renamed into place by commit(). Until then git does not see them, and abort() leaves no trace: the
   * quarantine receive-pack keeps a push's objects in until the push is accepted.
   */
  async stageLoose(objects: readonly { oid: string; type: ObjectType; body: Buffer }[], existingDirs?: ReadonlySet<string>): Promise<StagedObjects> {
    let bytes = 0;
    const newDirs = new Set<string>();
    const staged = await settleAll(
      objects.map((o) => {
        const data = encodeLoose(o.type, o.body);
        bytes += data.length;
        const dir = o.oid.slice(0, 2);
        if (!existingDirs?.has(dir)) newDirs.add(dir);
        const tempName = gitTempName('tmp_obj_');
        return () => this.t.stageSmall(this.p(`objects/${dir}/${o.oid.slice(2)}`), data, { mode: 0o444, parents: existingDirs?.has(dir) ? false : 'last', tempName });
      }),
    );
    const dropDirs = () => Promise.all([...newDirs].map((d) => this.t.remove(this.p(`objects/${d}`), 'dir').catch(() => undefined)));
    if (staged.failed) {
      await Promise.all(staged.ok.map((f) => f.abort()));
      await dropDirs();
      throw staged.failed;
    }
    return {
      bytes,
      // No-replace renames: an object already there is the same object.
      commit: async () => {
        await mapLimit(staged.ok, PARALLEL, (f) => f.commit({ exclusive: true }));
      },
      abort: async () => {
        await Promise.all(staged.ok.map((f) => f.abort()));
        await dropDirs();
      },
    };
  }

  /** A pack and its idx, staged; commit() moves the pack first and the idx last: an idx is what makes git look inside. */
  async stagePack(name: string, pack: Buffer, idx: Buffer): Promise<StagedObjects> {
    const staged = await settleAll([
      () => this.t.stageSmall(this.p(`objects/pack/pack-${name}.pack`), pack, { mode: 0o444, parents: 'last', tempName: gitTempName('tmp_pack_') }),
      () => this.t.stageSmall(this.p(`objects/pack/pack-${name}.idx`), idx, { mode: 0o444, parents: 'last', tempName: gitTempName('tmp_idx_') }),
    ]);
    if (staged.failed) {
      await Promise.all(staged.ok.map((f) => f.abort()));
      throw staged.failed;
    }
    const [p, i] = staged.ok;
    return {
      bytes: pack.length + idx.length,
      commit: async () => {
        await p.commit({ exclusive: true });
        await i.commit({ exclusive: true });
      },
      abort: async () => {
        await Promise.all([p.abort(), i.abort()]);
      },
    };
  }

  /** Objects written and made visible at once (fetch into the local repository: nothing to withdraw). */
  async writeLoose(objects: readonly { oid: string; type: ObjectType; body: Buffer }[]): Promise<void> {
    await (await this.stageLoose(objects)).commit();
  }

  async writePack(name: string, pack: Buffer, idx: Buffer): Promise<void> {
    await (await this.stagePack(name, pack, idx)).commit();
  }

  // ---- objects out ----

  /** Reads objects from loose files and packs (by ranged reads), verifying every id. */
  async objectReader(): Promise<RepoObjects> {
    const r = new RepoObjects(this);
    await r.load();
    return r;
  }
}

export class RepoObjects {
  private loose = new Set<string>();
  private packs: { name: string; idx: PackIndex; reader?: Promise<PackReader> }[] = [];
  private readonly opened: Array<Promise<{ close(): Promise<void> }>> = [];
  constructor(private readonly repo: FileRepo) {}

  async load(): Promise<void> {
    const t = this.repo.t;
    const [top, packDir] = await Promise.all([t.readdir(this.repo.p('objects')), t.readdir(this.repo.p('objects/pack'))]);
    const fanDirs = (top ?? []).filter((e) => e.entry.type === 'dir' && /^[0-9a-f]{2}$/.test(e.name)).map((e) => e.name);
    const idxNames = (packDir ?? []).filter((e) => e.entry.type === 'file' && /^pack-[0-9a-f]{40}\.idx$/.test(e.name)).map((e) => e.name.slice(5, 45));
    const packNames = new Set((packDir ?? []).filter((e) => /^pack-[0-9a-f]{40}\.pack$/.test(e.name)).map((e) => e.name.slice(5, 45)));
    await Promise.all([
      mapLimit(fanDirs, PARALLEL, async (d) => {
        for (const e of (await t.readdir(this.repo.p(`objects/${d}`))) ?? []) if (/^[0-9a-f]{38}$/.test(e.name)) this.loose.add(d + e.name);
      }),
      mapLimit(
        idxNames.filter((n) => packNames.has(n)),
        PARALLEL,
        async (name) => {
          const data = await t.readFile(this.repo.p(`objects/pack/pack-${name}.idx`));
          if (!data) return;
          try {
            this.packs.push({ name, idx: PackIndex.parse(data) });
          } catch (err) {
            throw new WsyncError('E_GIT_CORRUPT', `${this.repo.describe(`objects/pack/pack-${name}.idx`)}: ${(err as Error).message}`);
          }
        },
      ),
    ]);
  }

  has(oid: string): boolean {
    return this.loose.has(oid) || this.packs.some((p) => p.idx.has(oid));
  }

  get looseOids(): ReadonlySet<string> {
    return this.loose;
  }

  private readonly memory = new Map<string, GitObject>();

  /** Reads these objects concurrently now, so that later reads cost no round trip. */
  async prefetch(oids: readonly string[]): Promise<void> {
    await mapLimit(oids, PARALLEL, async (oid) => {
      this.memory.set(oid, await this.read(oid));
    });
  }

  async read(oid: string): Promise<GitObject> {
    if (!isOid(oid)) throw new WsyncError('E_GIT_CORRUPT', `bad object id ${oid}`);
    const mem = this.memory.get(oid);
    if (mem) return mem;
    if (this.loose.has(oid)) {
      const rel = `objects/${oid.slice(0, 2)}/${oid.slice(2)}`;
      const data = await this.repo.t.readFile(this.repo.p(rel), { small: true });
      if (data) {
        let obj: GitObject;
        try {
          obj = decodeLoose(data);
        } catch (err) {
          throw new WsyncError('E_GIT_CORRUPT', `${this.repo.describe(rel)}: ${(err as Error).message}`);
        }
        if (hashObject(obj.type, obj.body) !== oid) throw new WsyncError('E_GIT_CORRUPT', `${this.repo.describe(rel)} does not hash to ${oid}`);
        return obj;
      }
      // Packed by a `git gc` since we listed it: look in the packs.
    }
    const pack = this.packs.find((p) => p.idx.has(oid));
    if (!pack) throw new WsyncError('E_GIT_CORRUPT', `object ${oid} is missing from ${this.repo.describe()}`);
    if (!pack.reader) {
      const file = this.repo.t.openReader(this.repo.p(`objects/pack/pack-${pack.name}.pack`));
      this.opened.push(file);
      const external = async (base: string) => (this.has(base) ? this.read(base) : null);
      pack.reader = file.then((ra: RandomAccess) => new PackReader(blockCached(ra), pack.idx, external));
    }
    try {
      return await (await pack.reader).read(oid);
    } catch (err) {
      if (err instanceof WsyncError) throw err;
      throw new WsyncError('E_GIT_CORRUPT', `pack-${pack.name}: ${(err as Error).message}`);
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.opened.map((p) => p.then((f) => f.close()).catch(() => undefined)));
  }
}

const BLOCK = 16 * 1024;
const MAX_BLOCKS = 1024;

/**
 * Reads a remote pack in 16 KiB blocks, kept (up to 16 MiB): git writes a pack newest history first, commits
 * together, so one block holds the many commits and trees a history walk asks for one after another, and each
 * step no longer costs a round trip of its own. Small blocks, because the objects a fetch needs beyond the
 * commits (and their delta bases) lie scattered through the pack: with 64 KiB blocks a fetch of ten commits read
 * 798 kB of an 857 kB pack.
 */
function blockCached(ra: RandomAccess): RandomAccess {
  const blocks = new Map<number, Promise<Buffer>>();
  const block = (b: number): Promise<Buffer> => {
    let p = blocks.get(b);
    if (p) {
      blocks.delete(b);
      blocks.set(b, p);
      return p;
    }
    p = ra.read(b * BLOCK, Math.min(BLOCK, ra.size - b * BLOCK));
    p.catch(() => blocks.delete(b));
    blocks.set(b, p);
    if (blocks.size > MAX_BLOCKS) blocks.delete(blocks.keys().next().value!);
    return p;
  };
  return {
    size: ra.size,
    async read(pos, length) {
      if (length > 4 * BLOCK) return ra.read(pos, length);
      const first = Math.floor(pos / BLOCK);
      const last = Math.floor((pos + length - 1) / BLOCK);
      const parts = await Promise.all(Array.from({ length: last - first + 1 }, (_, i) => block(first + i)));
      const whole = parts.length === 1 ? parts[0] : Buffer.concat(parts);
      const start = pos - first * BLOCK;
      return whole.subarray(start, start + length);
    },
  };
}

function formatAge(s: number): string {
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min`;
  return `${Math.floor(s / 3600)} h`;
}

/** git itself refuses repositories it does not understand; so does wsync, before writing anything. */
function checkFormat(t: Transport, layout: RepoLayout): void {
  const cfg = layout.config;
  const version = Number(cfg.get('core.repositoryformatversion') ?? '0');
  const where = t.describe(layout.gitDir);
  if (version !== 0 && version !== 1) throw new WsyncError('E_GIT_UNSUPPORTED', `${where}: repository format version ${version} is not supported`);
  const objectFormat = cfg.get('extensions.objectformat');
  if (objectFormat && objectFormat.toLowerCase() !== 'sha1') {
    throw new WsyncError('E_GIT_UNSUPPORTED', `${where} uses ${objectFormat} object ids; wsync supports sha1 repositories only`);
  }
  const refStorage = cfg.get('extensions.refstorage');
  if (refStorage && refStorage.toLowerCase() !== 'files') throw new WsyncError('E_GIT_UNSUPPORTED', `${where} stores refs as ${refStorage}; wsync needs the files backend`);
  if (version === 1) {
    // Extensions this code honours or that do not change the on-disk formats it touches.
    const harmless = new Set(['objectformat', 'refstorage', 'worktreeconfig', 'preciousobjects']);
    for (const key of cfg.keys()) {
      const m = /^extensions\.([^.]+)$/.exec(key);
      if (m && !harmless.has(m[1])) throw new WsyncError('E_GIT_UNSUPPORTED', `${where} uses the extension ${m[1]}, which wsync does not understand`);
    }
  }
}
