import { vmmStream } from '@handoff/proto';
import type { Logger, TlsMaterial } from '@handoff/service';
import { testMaterial } from '@handoff/service/testing';
import { afterEach, describe, expect, it } from 'vitest';
import type { IncomingChannel } from './channel.js';
import { connectDataChannel, startDataChannel, type DataChannelServer } from './data-channel.js';

const quiet = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
} as unknown as Logger;

const header: vmmStream.IncomingRequest = {
  frame: {
    $case: 'header',
    value: {
      formatMajor: 1,
      formatMinor: 0,
      token: 't',
      jobId: 'j',
      capabilities: [],
      spec: undefined,
      blocks: [],
      sourceVmmId: 'vmm-a',
    },
  },
};

describe('data channel over TCP with mutual TLS', () => {
  let server: DataChannelServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  /** A TLS data channel of vmm-b; resolves each connection's peer and first request. */
  async function serve(): Promise<{ peer: string | null; first: string | undefined }[]> {
    const seen: { peer: string | null; first: string | undefined }[] = [];
    server = await startDataChannel(
      '127.0.0.1:0',
      async (ch: IncomingChannel) => {
        const first = await ch.next();
        seen.push({ peer: ch.peer, first: first?.frame?.$case });
        ch.end();
      },
      quiet,
      { tls: await testMaterial({ id: 'vmm-b', role: 'vmm' }) },
    );
    return seen;
  }

  async function send(material: TlsMaterial | null): Promise<Error | null> {
    let broken: Error | null = null;
    try {
      const ch = await connectDataChannel(
        server!.address,
        { reply: () => undefined, broken: (e) => (broken = e) },
        header,
        material,
      );
      await new Promise((r) => setTimeout(r, 200));
      ch.close();
    } catch (err) {
      return err as Error;
    }
    return broken;
  }

  it('names the source vmm its certificate proves, for the token check', async () => {
    const seen = await serve();
    await send(await testMaterial({ id: 'vmm-a', role: 'vmm' }));
    expect(seen).toEqual([{ peer: 'vmm-a', first: 'header' }]);
  });

  it('carries raw page frames once the target acks format 1.3', async () => {
    const got: vmmStream.PageFrame[] = [];
    server = await startDataChannel(
      '127.0.0.1:0',
      async (ch: IncomingChannel) => {
        await ch.next(); // the header
        ch.write({
          reply: {
            $case: 'headerAck',
            value: vmmStream.HeaderAck.fromPartial({ formatMajor: 1, formatMinor: 3 }),
          },
        });
        const pages = await ch.next();
        if (pages?.frame?.$case === 'pages') got.push(pages.frame.value);
        ch.end();
      },
      quiet,
      { tls: await testMaterial({ id: 'vmm-b', role: 'vmm' }) },
    );
    let acked = false;
    const ch = await connectDataChannel(
      server.address,
      { reply: () => (acked = true), broken: () => undefined },
      header,
      await testMaterial({ id: 'vmm-a', role: 'vmm' }),
    );
    await expect.poll(() => acked, { timeout: 5000 }).toBe(true);
    const data = new Uint8Array(64 * 1024).map((_, i) => (i % 249) | 1);
    const runs = [{ block: 0, firstPage: 3n, pageCount: 16, flags: 0 }];
    ch.write({ frame: { $case: 'pages', value: { runs, data } } });
    await expect.poll(() => got.length, { timeout: 5000 }).toBe(1);
    expect(got[0]!.runs).toEqual(runs);
    expect(Buffer.from(got[0]!.data).equals(Buffer.from(data))).toBe(true);
    ch.close();
  });

  it('serves no stream to a certificate of another role, nor to a plaintext client', async () => {
    const seen = await serve();
    expect(await send(await testMaterial({ id: 'operator', role: 'operator' }))).not.toBeNull();
    expect(await send(null)).not.toBeNull();
    expect(seen).toEqual([]);
  });
});
