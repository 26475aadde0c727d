/** Polls `ok` every 50 ms until it holds; fails after `ms` with `what` and, if given, `detail()`. */
export async function until(what: string, ok: () => boolean, ms: number, detail: () => string = () => ''): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}\n${detail()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
