/**
 * A fault-injecting TCP proxy for the link tests: forwards to a real sshd and cuts each connection after a given
 * number of bytes (both directions counted), the way a dropped Wi-Fi, a suspended VM or a proxy that resets idle
 * sockets does. Also re-points the tests' ssh_config at itself, with a known_hosts entry for its port.
 */
import net from 'node:net';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestServer } from './sshd.js';
import { writeProxyConfig } from '../../bench/harness.js';

export type CutMode =
  /** Both sockets destroyed at once (an RST: what a reset or a dead route looks like to the client). */
  | 'reset'
  /** Both sides get a FIN after the last byte (what a killed server process looks like). */
  | 'end'
  /** Bytes stop flowing and the sockets stay open (a link that silently died); closed after `stallMs`. */
  | 'stall';

export interface CutProxy {
  port: number;
  /** Cut the next connections after this many bytes (undefined: never). */
  cutAfter: number | undefined;
  mode: CutMode;
  stallMs: number;
  /** Connections that were cut. */
  cuts(): number;
  /** Bytes (both directions) the last connection passed before it closed or was cut. */
  lastBytes(): number;
  /** Resets every connection open now (a link that drops between two runs of a session). */
  cutNow(): void;
  /** ssh_config whose Host alias (the server's alias) goes through this proxy. */
  sshConfig: string;
  close(): Promise<void>;
}

export async function startCutProxy(srv: TestServer, dir: string): Promise<CutProxy> {
  const live = new Set<net.Socket>();
  let cutCount = 0;
  let last = 0;
  const state = { cutAfter: undefined as number | undefined, mode: 'reset' as CutMode, stallMs: 3000 };
  const server = net.createServer({ noDelay: true }, (client) => {
    const upstream = net.connect({ port: srv.port, host: '127.0.0.1', noDelay: true });
    live.add(client);
    live.add(upstream);
    const limit = state.cutAfter;
    const mode = state.mode;
    let passed = 0;
    let cut = false;
    const kill = () => {
      client.destroy();
      upstream.destroy();
    };
    const doCut = () => {
      if (cut) return;
      cut = true;
      cutCount++;
      if (mode === 'reset') {
        client.resetAndDestroy();
        upstream.resetAndDestroy();
      } else if (mode === 'end') {
        client.end();
        upstream.end();
      } else {
        client.pause();
        upstream.pause();
        setTimeout(kill, state.stallMs).unref();
      }
    };
    const pipe = (from: net.Socket, to: net.Socket) => {
      from.on('data', (d: Buffer) => {
        if (cut) return;
        if (limit !== undefined && passed + d.length >= limit) {
          const keep = Math.max(0, limit - passed);
          passed = limit;
          last = passed;
          if (keep > 0) to.write(d.subarray(0, keep));
          doCut();
          return;
        }
        passed += d.length;
        last = passed;
        if (!to.write(d)) {
          from.pause();
          to.once('drain', () => {
            if (!cut) from.resume();
          });
        }
      });
      from.on('end', () => {
        if (!cut) to.end();
      });
    };
    pipe(client, upstream);
    pipe(upstream, client);
    for (const s of [client, upstream]) {
      s.on('error', kill);
      s.on('close', () => {
        live.delete(s);
        kill();
      });
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  if (!addr || typeof addr !== 'object') throw new Error('cut proxy: no address');
  const port = addr.port;

  const cfgDir = join(dir, `cutproxy-${port}`);
  mkdirSync(cfgDir, { recursive: true });
  const sshConfig = writeProxyConfig(srv, port, cfgDir);
  // Keepalives every second: a stalled link is noticed within a few seconds, as a user's ServerAliveInterval would.
  writeFileSync(sshConfig, readFileSync(sshConfig, 'utf8').replace(/^(Host .*)$/m, '$1\n  ServerAliveInterval 1\n  ServerAliveCountMax 2'));

  return {
    port,
    get cutAfter() {
      return state.cutAfter;
    },
    set cutAfter(n: number | undefined) {
      state.cutAfter = n;
    },
    get mode() {
      return state.mode;
    },
    set mode(m: CutMode) {
      state.mode = m;
    },
    get stallMs() {
      return state.stallMs;
    },
    set stallMs(n: number) {
      state.stallMs = n;
    },
    cuts: () => cutCount,
    lastBytes: () => last,
    cutNow: () => {
      for (const s of [...live]) s.resetAndDestroy();
    },
    sshConfig,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of live) s.destroy();
        server.close(() => resolve());
      }),
  };
}
