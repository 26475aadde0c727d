import type { Conflict } from '../plan/plan.js';

/** A conflict in words, from its data: the only place conflicts are phrased (stderr, and `reason` in --json). */
export function describeConflict(c: Conflict): string {
  switch (c.kind) {
    case 'changed':
      return `changed on the ${c.side} side since the last sync${c.op === 'delete' ? '; not deleted' : ''}`;
    case 'unmanaged':
      return c.op === 'delete'
        ? 'not written by wsync; not deleted (--force moves it to the trash)'
        : `exists on the ${c.side} side and differs (not written by wsync); --force replaces it`;
    case 'dir-holds-changes':
      return `would replace a directory holding ${c.count} path(s) changed on the ${c.side} side (e.g. ${c.example})`;
    case 'unlisted':
      return 'would replace a directory that could not be fully listed';
    case 'changed-during-run':
      return c.found ?? `changed on the ${c.side} side while this run was working; not ${c.op === 'delete' ? 'deleted' : 'replaced'}`;
    case 'kept-aside':
      return `an interrupted run had kept a version of it that may hold someone's edit: now at ${c.keptAt}`;
  }
}

/** A conflict as --json prints it: its data, and the words. */
export function conflictJson(c: Conflict): Conflict & { reason: string } {
  return { ...c, reason: describeConflict(c) };
}
