import { closeSync } from 'node:fs';
import { createMemfd, mapFd } from '@handoff/shm';
import type { RamBlockSpec } from '../vm/types.js';
import type { RamBacking, RamContext } from './backing.js';

/**
 * `private` RAM: a memfd owned by this vmm, mapped MAP_SHARED into this process (so the
 * buffer is a SharedArrayBuffer the vCPU worker shares). Its pages are always sent on
 * migration. The fd is kept for the block's life (a later milestone may hand it on).
 */
export function openPrivate(spec: RamBlockSpec, ctx: RamContext): RamBacking {
  const fd = createMemfd(`handoff:${ctx.vmName}:${spec.id}`, { size: spec.size });
  let mapping;
  try {
    mapping = mapFd(fd, { sharing: 'shared', length: spec.size });
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  let closed = false;
  const backing: RamBacking = {
    spec,
    buffer: mapping.buffer,
    regionRef: null,
    zeroed: true,
    abandon: () => void backing.close(),
    close: () => {
      if (!closed) {
        closed = true;
        mapping.close();
        try {
          closeSync(fd);
        } catch (err) {
          ctx.logger.warn(
            { block: spec.id, error: (err as Error).message },
            'closing a memfd failed',
          );
        }
      }
      return Promise.resolve();
    },
  };
  return backing;
}
