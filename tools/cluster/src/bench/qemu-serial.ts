import type { Socket } from 'node:net';
import { connectWhenListening } from './qemu-qmp.js';

/** A QEMU guest's serial console on a unix socket (`-serial unix:PATH,server=on`): text in, bytes out. */
export class Serial {
  private text = '';
  private readonly waiters: { pattern: string; resolve: () => void }[] = [];

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      this.text += d;
      for (let k = this.waiters.length - 1; k >= 0; k--) {
        const w = this.waiters[k]!;
        if (this.text.includes(w.pattern)) {
          this.waiters.splice(k, 1);
          w.resolve();
        }
      }
    });
  }

  static async open(path: string): Promise<Serial> {
    return new Serial(await connectWhenListening(path, 'serial'));
  }

  /** Resolves once `pattern` appeared in the output (since the socket opened). */
  until(pattern: string, timeoutMs: number): Promise<void> {
    if (this.text.includes(pattern)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`QEMU's guest did not print "${pattern}" in ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.waiters.push({
        pattern,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }

  send(line: string): void {
    this.socket.write(line);
  }

  close(): void {
    this.socket.destroy();
  }
}
