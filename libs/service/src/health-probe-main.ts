#!/usr/bin/env node
/** The `handoff-health-probe` executable (health-probe.ts): exit 0 when the service serves. */
import { parseProbeArgs, probeHealth, PROBE_USAGE, ProbeUsageError } from './health-probe.js';

try {
  const req = parseProbeArgs(process.argv.slice(2));
  if (req === 'help') {
    process.stdout.write(PROBE_USAGE);
  } else {
    const res = await probeHealth(req);
    (res.exitCode === 0 ? process.stdout : process.stderr).write(`${res.line}\n`);
    process.exitCode = res.exitCode;
  }
} catch (err) {
  process.stderr.write(`handoff-health-probe: ${(err as Error).message}\n\n${PROBE_USAGE}`);
  process.exitCode = err instanceof ProbeUsageError ? 2 : 1;
}
