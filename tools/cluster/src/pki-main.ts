#!/usr/bin/env node
/**
 * `npm run pki -- --dir DIR ...`: creates a Handoff PKI in a folder (pki-args.ts), for
 * clusters `npm start` does not set up itself (containers, other hosts).
 */
import { ensurePki } from '@handoff/service/pki';
import { parsePkiArgs, PKI_USAGE, PkiUsageError } from './pki-args.js';

try {
  const req = parsePkiArgs(process.argv.slice(2));
  if (req === 'help') {
    process.stdout.write(PKI_USAGE);
  } else {
    const report = await ensurePki(req.dir, req.identities, { names: req.names });
    process.stdout.write(
      `${report.createdCa ? 'created a CA' : 'kept the CA'} in ${report.dir}; ` +
        `issued: ${report.issued.length > 0 ? report.issued.join(', ') : 'nothing (all valid)'}\n`,
    );
  }
} catch (err) {
  process.stderr.write(`pki: ${(err as Error).message}\n`);
  if (err instanceof PkiUsageError) process.stderr.write(`\n${PKI_USAGE}`);
  process.exit(err instanceof PkiUsageError ? 2 : 1);
}
