import { readFileSync } from 'node:fs';
import { WsyncError, errorMessage } from '../errors.js';

/**
 * rsync habits on push/pull's command line: each rsync option a user may type is accepted with rsync's meaning, or
 * refused with what to do instead, before the real parser sees it (an unknown option that swallowed a path gave
 * "Not enough non-option arguments"). Returns the arguments in wsync's own spelling plus what they asked for
 * beyond it, and the --include/--exclude rules in command-line order (rsync's model: first match wins).
 */
export interface Normalized {
  argv: string[];
  /** --progress: the progress line even when stderr is not a terminal. */
  progress: boolean;
  /** --stats: the transfer statistics after the summary. */
  stats: boolean;
  /** --include/--exclude (and the -from files), in order. */
  rules: Array<{ include: boolean; glob: string }>;
}

/** Options rsync has and wsync does the same by default: accepted and dropped. */
const SAME_BY_DEFAULT: Record<string, string> = {
  '-a': 'archive', '--archive': 'archive', '-r': 'recursive', '--recursive': 'recursive', '-t': 'times', '--times': 'times',
  '-l': 'links', '--links': 'links', '-p': 'perms', '--perms': 'perms', '-D': 'devices', '--devices': 'devices', '--specials': 'specials',
};

/** Options refused, with what to do instead. */
const REFUSED: Record<string, string> = {
  '--partial': 'an interrupted run keeps every file it finished, and the next run sends the rest (a file cut mid-way is sent again); for the progress line use --progress',
  '-P': 'it means --partial --progress: an interrupted run keeps every file it finished and the next run sends the rest; for the progress line use --progress',
  '--bwlimit': 'there is no bandwidth limit yet; limit the link outside wsync (e.g. a traffic-shaping ProxyCommand in ~/.ssh/config)',
  '--filter': 'give --exclude and --include in order instead (first match wins, as in rsync), or put the patterns in a .wsyncignore file',
  '-f': 'give --exclude and --include in order instead (first match wins, as in rsync), or put the patterns in a .wsyncignore file',
  '--delete-excluded': 'excluded paths are never deleted; remove them by hand, or sync without the exclude and with --delete',
  '-m': 'empty directories are synced as they are; exclude the ones you do not want',
  '--prune-empty-dirs': 'empty directories are synced as they are; exclude the ones you do not want',
  '-e': 'wsync speaks SSH itself and reads ~/.ssh/config: use -F FILE for another config, -i FILE for a key, or a Host alias',
  '--rsh': 'wsync speaks SSH itself and reads ~/.ssh/config: use -F FILE for another config, -i FILE for a key, or a Host alias',
  '-u': 'a file changed on the destination is never overwritten: it is reported as a conflict (--force replaces it, keeping the old one in .wsync/trash/)',
  '--update': 'a file changed on the destination is never overwritten: it is reported as a conflict (--force replaces it, keeping the old one in .wsync/trash/)',
  '--inplace': 'every file is written under a temp name and renamed into place, so readers never see half a file',
  '-H': 'hard links are not preserved: each name is synced as its own file',
  '--hard-links': 'hard links are not preserved: each name is synced as its own file',
  '-A': 'ACLs are not synced (SFTP carries permission bits only)',
  '-X': 'extended attributes are not synced (SFTP carries permission bits only)',
  '-o': 'owners are not synced: files belong to the SSH login on the remote and to you locally',
  '-g': 'groups are not synced: files belong to the SSH login on the remote and to you locally',
  '--backup': 'with --force, every file replaced or deleted is kept in .wsync/trash/<time>/',
  '--backup-dir': 'with --force, every file replaced or deleted is kept in .wsync/trash/<time>/',
  '-L': 'symlinks are synced as links, never followed',
  '--copy-links': 'symlinks are synced as links, never followed',
};

/** wsync's own single-letter flags without a value, and those with one. */
const OWN_FLAGS = new Set(['n', 'v', 'q', 'z', 'c', 'h', 'V']);
const OWN_VALUED = new Set(['i', 'F']);
/** wsync's long options for push and pull (yargs also accepts the negated and camel-case forms it makes). */
const KNOWN_LONG = new Set([
  'delete', 'dry-run', 'exclude', 'include', 'gitignore', 'no-gitignore', 'json', 'quiet', 'verbose', 'force', 'ssh-config',
  'identity', 'accept-new', 'compress', 'no-compress', 'concurrency', 'channels', 'wait', 'break-lock', 'checksum', 'help', 'version',
]);

function refuse(opt: string): never {
  throw new WsyncError('E_USAGE', `wsync does not support ${opt}: ${REFUSED[opt]}`);
}

function readPatterns(file: string, opt: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new WsyncError('E_USAGE', `${opt} ${file}: ${errorMessage(err)}`);
  }
  // rsync's list files: one pattern a line; blank lines and lines starting with # or ; are comments.
  return text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#') && !l.startsWith(';'));
}

export function normalizeSyncArgs(argv: string[]): Normalized {
  const out: string[] = [];
  const rules: Normalized['rules'] = [];
  let progress = false;
  let stats = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    const eq = a.startsWith('--') ? a.indexOf('=') : -1;
    const name = eq > 0 ? a.slice(0, eq) : a;
    const value = (): string => {
      if (eq > 0) return a.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined) throw new WsyncError('E_USAGE', `${name} needs a value`);
      return v;
    };
    if (SAME_BY_DEFAULT[name]) continue;
    if (REFUSED[name]) refuse(name);
    switch (name) {
      case '--progress':
        progress = true;
        continue;
      case '--stats':
        stats = true;
        continue;
      case '--itemize-changes':
        out.push('--verbose');
        continue;
      case '--exclude':
      case '--include': {
        const glob = value();
        rules.push({ include: name === '--include', glob });
        out.push(name, glob);
        continue;
      }
      case '--exclude-from':
      case '--include-from': {
        const include = name === '--include-from';
        for (const glob of readPatterns(value(), name)) {
          rules.push({ include, glob });
          out.push(include ? '--include' : '--exclude', glob);
        }
        continue;
      }
    }
    // Bundled short flags the rsync way (-avz, -avzh): rsync's no-ops dropped, refusals refused, the rest kept.
    if (/^-[A-Za-z]{2,}$/.test(a)) {
      const kept: string[] = [];
      const letters = a.slice(1);
      for (let k = 0; k < letters.length; k++) {
        const f = `-${letters[k]}`;
        // In a bundle, rsync's -h is --human-readable, which wsync's output already is.
        if (SAME_BY_DEFAULT[f] || f === '-h') continue;
        if (REFUSED[f]) refuse(f);
        if (OWN_VALUED.has(letters[k])) {
          // The value is the rest of the bundle or the next argument (-iKEY, -i KEY), as getopt does.
          const rest = letters.slice(k + 1);
          if (kept.length) out.push(`-${kept.join('')}`);
          kept.length = 0;
          out.push(f, rest || value());
          break;
        }
        if (!OWN_FLAGS.has(letters[k])) throw new WsyncError('E_USAGE', `unknown option ${f} (in ${a})`, { hint: 'see wsync push --help' });
        kept.push(letters[k]);
      }
      if (kept.length) out.push(`-${kept.join('')}`);
      continue;
    }
    // Anything else that looks like an option must be one of wsync's: an unknown one would otherwise take the
    // next argument as its value and leave "not enough arguments" for the paths.
    if (name.startsWith('--') && !KNOWN_LONG.has(name.slice(2))) throw new WsyncError('E_USAGE', `unknown option ${name}`, { hint: 'see wsync push --help' });
    if (/^-[A-Za-z]$/.test(name) && !OWN_FLAGS.has(name[1]) && !OWN_VALUED.has(name[1])) throw new WsyncError('E_USAGE', `unknown option ${name}`, { hint: 'see wsync push --help' });
    out.push(a);
  }
  return { argv: out, progress, stats, rules };
}
