/**
 * What must be undone if the process is interrupted (Ctrl-C, SIGTERM): lock files on a server, mostly. A git lock
 * left behind blocks every git command there until someone removes it by hand, and a push cannot tell a crashed
 * holder from a live one. The CLI runs these on a signal, with a time limit, before it exits.
 */
const tasks = new Set<() => Promise<void>>();

/** Registers an undo step; returns the function that unregisters it (call it once the step is moot). */
export function onInterrupt(task: () => Promise<void>): () => void {
  tasks.add(task);
  return () => tasks.delete(task);
}

/** Runs every registered step at once; gives up waiting after `timeoutMs` (a dead connection cannot be undone). */
export async function runInterruptTasks(timeoutMs: number): Promise<void> {
  const all = [...tasks];
  tasks.clear();
  await Promise.race([Promise.allSettled(all.map((t) => t())), new Promise((r) => setTimeout(r, timeoutMs).unref())]);
}
