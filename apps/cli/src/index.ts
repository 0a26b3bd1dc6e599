/**
 * vmctl, the command-line entry point to a Handoff cluster, and the local
 * cluster launcher behind `npm start`.
 *
 * @packageDocumentation
 */
export { main, buildProgram } from './main.js';
export { parseSize, formatBytes } from './output/units.js';
export { EXIT, CliError } from './errors.js';
export { startCluster, stopChild, type Cluster, type ClusterOptions } from './cluster/launcher.js';
