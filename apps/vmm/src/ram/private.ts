import { closeSync, write as writeFd } from 'node:fs';
import { createMemfd, dataRanges, fallocate, mapFd } from '@handoff/shm';
import type { RamBlockSpec } from '../model/types.js';
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
  let populate = true; // MADV_POPULATE_* (Linux 5.14+) until it fails once
  const backing: RamBacking = {
    spec,
    buffer: mapping.buffer,
    regionRef: null,
    zeroed: true,
    dataRanges: () => {
      if (closed) return null;
      try {
        return dataRanges(fd, 0, spec.size);
      } catch {
        return null;
      }
    },
    write: async (offset, data) => {
      let done = 0;
      while (done < data.length) {
        if (closed) throw new Error(`RAM block ${spec.id} is closed`);
        done += await new Promise<number>((resolve, reject) =>
          writeFd(fd, data, done, data.length - done, offset + done, (err, n) =>
            err === null ? resolve(n) : reject(err),
          ),
        );
      }
    },
    zero: (offset, length) => {
      if (closed) throw new Error(`RAM block ${spec.id} is closed`);
      if (length > 0) fallocate(fd, offset, length, { punchHole: true });
    },
    prefault: (offset, length, access = 'write') => {
      if (closed || !populate || length <= 0) return;
      try {
        mapping.advise(access === 'read' ? 'populate-read' : 'populate-write', offset, length);
      } catch (err) {
        populate = false;
        ctx.logger.debug(
          { block: spec.id, error: (err as Error).message },
          'cannot pre-fault RAM (MADV_POPULATE_*); pages fault in one by one',
        );
      }
    },
    memoryUsage: () => {
      if (closed) return null;
      const u = mapping.usage();
      return { pss: u.pss, privateDirty: u.privateDirty, rss: u.rss };
    },
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
