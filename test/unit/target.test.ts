import { describe, it, expect } from 'vitest';
import { parseTarget } from '../../src/target.js';

describe('parseTarget', () => {
  it('reads the remote forms', () => {
    expect(parseTarget('vm:workspace/app')).toEqual({ kind: 'ssh', host: 'vm', user: undefined, path: 'workspace/app' });
    expect(parseTarget('me@vm:/srv/app')).toEqual({ kind: 'ssh', host: 'vm', user: 'me', path: '/srv/app' });
    expect(parseTarget('vm:')).toEqual({ kind: 'ssh', host: 'vm', user: undefined, path: '' });
    expect(parseTarget('ssh://me@vm:2222/srv/app')).toEqual({ kind: 'ssh', host: 'vm', user: 'me', port: 2222, path: '/srv/app' });
    expect(parseTarget('ssh://vm/~/app')).toEqual({ kind: 'ssh', host: 'vm', user: undefined, port: undefined, path: 'app' });
    expect(parseTarget('ssh://[::1]:22/x')).toMatchObject({ host: '::1', port: 22, path: '/x' });
    expect(parseTarget('me@[fe80::1]:dir')).toEqual({ kind: 'ssh', host: 'fe80::1', user: 'me', path: 'dir' });
  });

  it('treats plain paths as local, and a colon after a slash as part of a path', () => {
    expect(parseTarget('./out')).toEqual({ kind: 'local', path: './out' });
    expect(parseTarget('/tmp/a:b')).toEqual({ kind: 'local', path: '/tmp/a:b' });
    expect(parseTarget('dir/with:colon')).toEqual({ kind: 'local', path: 'dir/with:colon' });
  });

  it('on Windows, drive paths are local, never host C', () => {
    expect(parseTarget('C:\\\\work\\\\app', 'win32')).toEqual({ kind: 'local', path: 'C:\\\\work\\\\app' });
    expect(parseTarget('C:/work/app', 'win32')).toEqual({ kind: 'local', path: 'C:/work/app' });
    expect(parseTarget('c:', 'win32')).toEqual({ kind: 'local', path: 'c:' });
    expect(parseTarget('vm:C:/x', 'win32')).toEqual({ kind: 'ssh', host: 'vm', user: undefined, path: 'C:/x' });
    // Elsewhere a one-letter host is a host.
    expect(parseTarget('C:/work', 'linux')).toEqual({ kind: 'ssh', host: 'C', user: undefined, path: '/work' });
  });

  it('rejects malformed targets with E_TARGET', () => {
    for (const bad of ['', ':path', 'user@:path', '@host:path', 'ssh://', 'ssh://host:99999/x', 'ssh://host:abc/x']) {
      expect(() => parseTarget(bad), bad).toThrow(expect.objectContaining({ code: 'E_TARGET' }));
    }
  });
});
