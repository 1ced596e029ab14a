/**
 * What happened to one part of the stack (an Orthanc, PostgreSQL, a router, HAProxy):
 * up → started | already-running | restarted (its settings changed) | failed | skipped (not ours to start);
 * down → stopped | not-running | skipped | failed;
 * status → running | not-running | unhealthy (alive, not answering or refusing) | external (one ddr did not start answers there) | skipped.
 */
export type StackBackendState =
  | 'already-running'
  | 'external'
  | 'failed'
  | 'not-running'
  | 'restarted'
  | 'running'
  | 'skipped'
  | 'started'
  | 'stopped'
  | 'unhealthy'

/** Host names that mean this machine. */
export const LOCAL_HOSTS = new Set(['localhost', '127.0.0.1', '::1', '[::1]', '0.0.0.0'])
