import { closeSync, openSync, readFileSync, readSync } from 'node:fs';

/**
 * Reading another process's view of a mapped file through /proc (Linux): which processes map
 * a file, and the bytes a process sees through its mapping (`/proc/<pid>/mem`), private
 * copy-on-write pages included. Tests run as the owner of the processes they start.
 */

/** The mappings of `path` in process `pid`: start address, length and file offset. */
export function mappingsOf(
  pid: number,
  path: string,
): { start: number; length: number; offset: number }[] {
  const out: { start: number; length: number; offset: number }[] = [];
  for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ ([0-9a-f]+) \S+ \d+\s+(.*)$/.exec(line);
    if (m === null || m[4] !== path) continue;
    const start = parseInt(m[1]!, 16);
    out.push({ start, length: parseInt(m[2]!, 16) - start, offset: parseInt(m[3]!, 16) });
  }
  return out;
}

/**
 * `length` bytes at file offset `offset` of `path` as process `pid` sees them through its
 * mapping of the file (for a MAP_PRIVATE mapping: the pages it wrote, the file's elsewhere).
 */
export function readThroughMapping(
  pid: number,
  path: string,
  offset: number,
  length: number,
): Uint8Array {
  const m = mappingsOf(pid, path).find(
    (x) => x.offset <= offset && offset + length <= x.offset + x.length,
  );
  if (m === undefined) throw new Error(`process ${pid} does not map ${path} at ${offset}`);
  const fd = openSync(`/proc/${pid}/mem`, 'r');
  try {
    const out = new Uint8Array(length);
    let got = 0;
    while (got < length) {
      const n = readSync(fd, out, got, length - got, m.start + offset - m.offset + got);
      if (n <= 0) throw new Error(`short read of process ${pid} memory`);
      got += n;
    }
    return out;
  } finally {
    closeSync(fd);
  }
}

/** `length` bytes of `path` at `offset`, read through the file itself (holes read as zero). */
export function fileBytes(path: string, offset: number, length: number): Uint8Array {
  const fd = openSync(path, 'r');
  try {
    const out = new Uint8Array(length);
    for (let got = 0; got < length;) {
      const n = readSync(fd, out, got, length - got, offset + got);
      if (n <= 0) break;
      got += n;
    }
    return out;
  } finally {
    closeSync(fd);
  }
}
