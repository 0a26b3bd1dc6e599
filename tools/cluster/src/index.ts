/**
 * The local cluster behind `npm start`: memstore, migrator and vmm instances started as child
 * processes on loopback, plus the migration bench that runs on it. A tool, not a service: it
 * starts services by their executables and talks to them through vmctl's client library.
 *
 * @packageDocumentation
 */
export {
  startCluster,
  serviceEntry,
  ClusterError,
  FIRST_HOST_ID,
  type Cluster,
  type ClusterHost,
  type ClusterOptions,
  type ExtraHostOptions,
  type ServiceSpec,
} from './launcher.js';
export { colourFor, formatLogLine } from './log-lines.js';
export { MAX_HOSTS, SECOND_HOST, parseHostCount } from './hosts.js';
export {
  DEFAULT_RESTART_POLICY,
  RestartBackoff,
  type RestartDecision,
  type RestartPolicy,
} from './restart-policy.js';
export { SupervisedService, type StartService, type SupervisionEvent } from './supervisor.js';
export { describeEvent } from './supervision-lines.js';
export {
  runKillLoop,
  VICTIMS,
  type Victim,
  type RoundReport,
  type KillLoopOptions,
} from './chaos/kill-loop.js';
export { ask, putKeys, wrongKeys } from './chaos/kv-probe.js';
