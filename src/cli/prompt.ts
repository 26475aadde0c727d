import { createInterface } from 'node:readline';
import type { HostKeyPrompt } from '../ssh/connect.js';

export function isInteractive(): boolean {
  return Boolean(process.stdin.isTTY && process.stderr.isTTY);
}

function ask(question: string): Promise<string> {
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  return new Promise((resolve) =>
    rl.question(question, (answer) => {
      rl.close();
      resolve(answer);
    }),
  );
}

export const ttyHostKeyPrompt: HostKeyPrompt = {
  async confirmUnknown(host, keyType, fingerprint) {
    process.stderr.write(`The authenticity of host '${host}' can't be established.\n${keyType} key fingerprint is ${fingerprint}.\n`);
    for (;;) {
      const a = (await ask('Are you sure you want to continue connecting (yes/no)? ')).trim().toLowerCase();
      if (a === 'yes') return true;
      if (a === 'no' || a === '') return false;
      process.stderr.write("Please type 'yes' or 'no'.\n");
    }
  },
};

/** The connection options every command takes (-F, -i, --accept-new, -z, --channels), as the library names them. */
export function connectionArgs(a: { 'ssh-config'?: string; identity?: string; 'accept-new': boolean; compress?: boolean; channels: number }) {
  return { sshConfig: a['ssh-config'], identity: a.identity, acceptNew: a['accept-new'], compress: a.compress, channels: Math.max(1, a.channels) };
}
