import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * What the QEMU side-by-side rows of the benches share: the QEMU binary, the kvserver ELF both
 * machines run, and a minimal QMP client.
 */

export const MiB = 1024 * 1024;
export const QEMU = 'qemu-system-riscv32';
export const KVSERVER = join(
  dirname(fileURLToPath(import.meta.url)),
  '../../../../guests/kvserver/kvserver.elf',
);

/** True when QEMU and the guest ELF are here (else the bench says why it skipped QEMU). */
export function qemuAvailable(): string | null {
  if (spawnSync(QEMU, ['--version']).status !== 0) return `${QEMU} is not installed`;
  if (!existsSync(KVSERVER)) return `${KVSERVER} is not built (make -C guests)`;
  return null;
}

/**
 * Connects to a unix socket QEMU serves (`server=on`). The file appears at bind(), a moment
 * before QEMU listens, so a refused connection is tried again. Generous: a burst of a hundred
 * QEMU processes starting at once on two cores takes seconds to listen.
 */
export async function connectWhenListening(path: string, what: string): Promise<Socket> {
  const deadline = performance.now() + 30_000;
  for (;;) {
    if (existsSync(path)) {
      const socket = connect(path);
      const err = await new Promise<Error | null>((resolve) => {
        socket.once('connect', () => resolve(null));
        socket.once('error', resolve);
      });
      if (err === null) return socket;
      socket.destroy();
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ECONNREFUSED' && code !== 'ENOENT') throw err;
    }
    if (performance.now() > deadline) {
      throw new Error(`QEMU did not listen on its ${what} socket ${path} in 30 s`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A QMP session: one command at a time, events ignored. */
export class Qmp {
  private buf = '';
  private waiting: ((m: Record<string, unknown>) => void)[] = [];

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      this.buf += d;
      for (let i = this.buf.indexOf('\n'); i >= 0; i = this.buf.indexOf('\n')) {
        const m = JSON.parse(this.buf.slice(0, i)) as Record<string, unknown>;
        this.buf = this.buf.slice(i + 1);
        if ('return' in m || 'error' in m) this.waiting.shift()?.(m);
      }
    });
  }

  static async open(path: string): Promise<Qmp> {
    const socket = await connectWhenListening(path, 'QMP');
    await new Promise<void>((resolve, reject) => {
      socket.once('data', () => resolve()); // the greeting
      socket.once('error', reject);
    });
    const q = new Qmp(socket);
    await q.cmd('qmp_capabilities');
    return q;
  }

  async cmd(execute: string, args?: object): Promise<Record<string, unknown>> {
    const reply = new Promise<Record<string, unknown>>((r) => this.waiting.push(r));
    this.socket.write(`${JSON.stringify({ execute, ...(args ? { arguments: args } : {}) })}\n`);
    const m = await reply;
    if ('error' in m) throw new Error(`QMP ${execute}: ${JSON.stringify(m.error)}`);
    return (m.return ?? {}) as Record<string, unknown>;
  }

  close(): void {
    this.socket.destroy();
  }
}
