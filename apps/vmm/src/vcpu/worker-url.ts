import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { VmmError } from '../model/vmm-error.js';

/**
 * The compiled vCPU worker. From `dist/` it is the sibling `thread.js`. When this module
 * runs from TypeScript sources (vitest, or anything resolving `@handoff/source`), a Worker
 * cannot load the `.ts` file, so the compiled worker of the same package's `dist/` is used:
 * the thread then runs the built machine (`npm test` builds first; after editing the machine,
 * run `npx tsc -b apps/vmm` before tests that start VMs).
 *
 * @throws VmmError `VMM_VCPU_FAILED` when no compiled worker exists
 */
export function vcpuWorkerUrl(from: string = import.meta.url): URL {
  const here = fileURLToPath(from);
  const sibling = join(dirname(here), 'thread.js');
  if (here.endsWith('.js') && existsSync(sibling)) return pathToFileURL(sibling);
  const m = /^(.*)[\\/]src[\\/]vcpu[\\/][^\\/]+\.ts$/.exec(here);
  const built = m !== null ? join(m[1]!, 'dist', 'vcpu', 'thread.js') : sibling;
  if (existsSync(built)) return pathToFileURL(built);
  throw new VmmError(
    'VMM_VCPU_FAILED',
    `the vCPU worker ${built} is missing; build the vmm with \`npx tsc -b apps/vmm\` ` +
      '(or `npm run build`)',
  );
}
