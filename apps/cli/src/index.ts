/**
 * vmctl, the command-line entry point to a Handoff cluster. Its client library is
 * `@handoff/cli/client`; the local cluster behind `npm start` is `@handoff/cluster`
 * (tools/cluster).
 *
 * @packageDocumentation
 */
export { main, buildProgram } from './main.js';
export { parseSize, formatBytes } from './output/units.js';
export { EXIT, CliError } from './errors.js';
