import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const WSYNC_BIN = fileURLToPath(new URL('../../bin/wsync.js', import.meta.url));

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the real CLI in a child process with no TTY and no stdin, as CI would. */
export function runCli(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WSYNC_BIN, ...args], {
      cwd: opts.cwd,
      env: { ...process.env, SSH_AUTH_SOCK: '', ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const shellQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * Runs the CLI on a pseudo-terminal (util-linux `script`, present on every Debian) and types each answer once its
 * prompt has appeared: the way a person at a terminal would. Output is the terminal's (stdout and stderr merged).
 */
export function runCliOnTty(
  args: string[],
  answers: Array<{ prompt: RegExp; answer: string; afterMs?: number }>,
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<{ code: number | null; output: string }> {
  const cmd = [process.execPath, WSYNC_BIN, ...args].map(shellQuote).join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qfec', cmd, '/dev/null'], { env: { ...process.env, SSH_AUTH_SOCK: '', ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    let next = 0;
    // Each prompt is looked for after the previous answer, in the text without terminal control sequences
    // (readline redraws its prompt with cursor moves).
    let from = 0;
    const plain = () => output.slice(from).replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');
    const onData = (d: Buffer) => {
      output += d.toString();
      while (next < answers.length && answers[next].prompt.test(plain())) {
        const { answer, afterMs } = answers[next];
        if (afterMs) setTimeout(() => child.stdin.write(answer + '\n'), afterMs);
        else child.stdin.write(answer + '\n');
        from = output.length;
        next++;
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}
