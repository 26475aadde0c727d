import type { Client } from 'ssh2';

/**
 * ssh2 hands out an SFTP channel only after the server has answered `limits@openssh.com`, one round trip after
 * the VERSION reply that already names the extensions. Nothing a run sends first needs the limits: ssh2's
 * defaults for an OpenSSH server (254 KiB reads and writes) are within what it allows, and a non-OpenSSH server
 * gets 32 KiB until its answer arrives. So each channel is declared ready as soon as the limits request goes out,
 * and the answer updates ssh2's values when it comes (`limits` resolves then; SftpChannel reads them live).
 *
 * Relies on ssh2 1.17 internals: Client._chanMgr.update(id, channel) registering each new channel before its
 * subsystem starts, and SFTP._requests[reqid] = { extended, cb } being how the limits request is recorded. Any
 * other shape leaves ssh2's behaviour as it is.
 */
export function readyBeforeLimits(client: Client): void {
  const mgr = (client as unknown as { _chanMgr?: { update?: (id: number, val: unknown) => unknown } })._chanMgr;
  if (!mgr || typeof mgr.update !== 'function' || (mgr as { wsyncHooked?: boolean }).wsyncHooked) return;
  const update = mgr.update.bind(mgr);
  (mgr as { wsyncHooked?: boolean }).wsyncHooked = true;
  mgr.update = (id: number, val: unknown) => {
    hookChannel(val);
    return update(id, val);
  };
}

type RequestTable = Record<string, { extended?: string; cb?: (...args: unknown[]) => void }>;
interface SftpLike {
  _init?: unknown;
  _requests?: RequestTable;
  emit?: (ev: string) => boolean;
  wsyncLimits?: Promise<void>;
}

function hookChannel(val: unknown): void {
  const s = val as SftpLike;
  if (!s || typeof s._init !== 'function' || typeof s.emit !== 'function' || typeof s._requests !== 'object' || s._requests === null) return;
  const table = s._requests;
  let settle!: () => void;
  s.wsyncLimits = new Promise<void>((r) => (settle = r));
  s._requests = new Proxy(table, {
    set(t, key, req) {
      t[key as string] = req;
      if (req && typeof req === 'object' && req.extended === 'limits@openssh.com' && typeof req.cb === 'function') {
        const cb = req.cb;
        req.cb = (...args: unknown[]) => {
          // ssh2 stores the limits, then emits 'ready' a second time, which no one listens to any more.
          cb(...args);
          settle();
        };
        // Only this one request needed watching.
        s._requests = t;
        queueMicrotask(() => s.emit!('ready'));
      }
      return true;
    },
  });
}

/** Resolves once the channel's limits are in (at once for a channel that was never hooked or has none). */
export function limitsKnown(sftp: unknown): Promise<void> {
  return (sftp as SftpLike).wsyncLimits ?? Promise.resolve();
}
