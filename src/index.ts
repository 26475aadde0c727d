export { push, pull, sync, status, type StatusReport, type StatusSection, type SyncOptions, type SyncResult, type SyncEvent, type TwoWayResult } from './api.js';
export type { SyncConflict, SyncConflictKind } from './plan/reconcile.js';
export { WsyncError, type ErrorCode } from './errors.js';
export { parseTarget, type Target } from './target.js';
export type { ItemEvent, ProgressEvent, SyncStats } from './transfer/engine.js';
export { gitPush, type GitPushOptions, type GitPushResult } from './git/push.js';
export { gitFetch, type GitFetchOptions, type GitFetchResult } from './git/fetch.js';
export { openSession, Session, type SessionOptions, type ConnectionEvent, type ReconnectPolicy } from './session/session.js';
export { runOnce, type RunOptions } from './session/run.js';
