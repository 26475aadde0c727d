import { WsyncError } from './errors.js';

export type Target =
  | { kind: 'local'; path: string }
  | { kind: 'ssh'; host: string; user?: string; port?: number; path: string };

/**
 * Parses `host:path`, `user@host:path`, `ssh://user@host:port/path` or a plain local path. A relative remote path
 * is relative to the login's home (kept relative here; the transport resolves it). On Windows `C:\x` and `C:/x`
 * are local paths.
 */
export function parseTarget(spec: string, platform: NodeJS.Platform = process.platform): Target {
  if (!spec) throw new WsyncError('E_TARGET', 'empty target', { hint: 'use host:path, user@host:path, ssh://user@host:port/path or a local directory' });
  if (spec.startsWith('ssh://')) {
    const m = /^ssh:\/\/(?:([^@/]+)@)?(\[[^\]]+\]|[^:/]+)(?::(\d*))?(\/.*)?$/.exec(spec);
    if (!m || !m[2]) throw new WsyncError('E_TARGET', `malformed target '${spec}'`, { hint: 'expected ssh://[user@]host[:port]/path' });
    const port = m[3] ? Number(m[3]) : undefined;
    if (port !== undefined && (!Number.isInteger(port) || port < 1 || port > 65535)) throw new WsyncError('E_TARGET', `bad port in '${spec}'`);
    let path = m[4] ?? '';
    // ssh://host/~/dir is home-relative, as in git; ssh://host/dir is absolute.
    if (path.startsWith('/~/')) path = path.slice(3);
    else if (path === '/~' || path === '') path = '';
    return { kind: 'ssh', host: m[2].replace(/^\[|\]$/g, ''), user: m[1] ? decodeURIComponent(m[1]) : undefined, port, path };
  }
  if (platform === 'win32' && /^[A-Za-z]:([\\/]|$)/.test(spec)) return { kind: 'local', path: spec };
  const colon = spec.indexOf(':');
  const slash = spec.search(/[\\/]/);
  const bracket = /^(?:([^@/]+)@)?\[([^\]]+)\]:(.*)$/.exec(spec);
  if (bracket) return { kind: 'ssh', host: bracket[2], user: bracket[1], path: bracket[3] };
  if (colon > 0 && (slash < 0 || colon < slash)) {
    const hostPart = spec.slice(0, colon);
    const path = spec.slice(colon + 1);
    const at = hostPart.lastIndexOf('@');
    const user = at >= 0 ? hostPart.slice(0, at) : undefined;
    const host = at >= 0 ? hostPart.slice(at + 1) : hostPart;
    if (!host || (user !== undefined && !user) || /\s/.test(host)) {
      throw new WsyncError('E_TARGET', `malformed target '${spec}'`, { hint: 'expected host:path or user@host:path' });
    }
    return { kind: 'ssh', host, user, path };
  }
  if (colon === 0) throw new WsyncError('E_TARGET', `malformed target '${spec}': no host before ':'`, { hint: 'expected host:path, or ./path for a local directory' });
  return { kind: 'local', path: spec };
}

export function formatTarget(t: Target): string {
  if (t.kind === 'local') return t.path;
  return `${t.user ? t.user + '@' : ''}${t.host.includes(':') ? `[${t.host}]` : t.host}${t.port ? ':' + t.port : ''}:${t.path}`;
}
