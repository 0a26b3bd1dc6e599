import { createConnection } from 'node:net';
import { memstore as pb } from '@handoff/proto';
import { FramedSocket } from '@handoff/service';

/**
 * A vmm's lease-channel connection for tests and benches: connects to the socket at `path`,
 * says hello with a token from OpenLeaseSession, then sends calls and matches their answers
 * by id. Refused hellos reject {@link LeaseChannelClient.open}.
 */
export class LeaseChannelClient {
  private readonly framed: FramedSocket;
  private readonly waiters = new Map<bigint, (r: pb.LeaseChannelResponse) => void>();
  private nextId = 1n;

  private constructor(framed: (self: LeaseChannelClient) => FramedSocket) {
    this.framed = framed(this);
  }

  /** Connects to `path` and says hello with `token` as process `instance`. */
  static async open(path: string, token: string, instance: string): Promise<LeaseChannelClient> {
    const socket = createConnection(path);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const ch = new LeaseChannelClient(
      (self) =>
        new FramedSocket(socket, 1 << 20, {
          frame: (payload) => {
            const res = pb.LeaseChannelResponse.decode(payload);
            self.waiters.get(res.id)?.(res);
            self.waiters.delete(res.id);
          },
          closed: () => {},
        }),
    );
    const hello = await ch.call({ $case: 'hello', value: { token, instance } });
    if (hello.result?.$case !== 'hello') {
      ch.close();
      throw new Error(`hello refused: ${JSON.stringify(hello.result)}`);
    }
    return ch;
  }

  /** One call; resolves with its answer (the method's response or an error). */
  call(body: pb.LeaseChannelRequest['call']): Promise<pb.LeaseChannelResponse> {
    const id = this.nextId++;
    const p = new Promise<pb.LeaseChannelResponse>((r) => this.waiters.set(id, r));
    this.framed.send(pb.LeaseChannelRequest.encode({ id, call: body }).finish());
    return p;
  }

  /** FetchPages of region `name`: the answer (fetch_pages, or an error). */
  fetch(name: string, firstPage: number, pageCount: number): Promise<pb.LeaseChannelResponse> {
    return this.call({
      $case: 'fetchPages',
      value: {
        region: { selector: { $case: 'name', value: name } },
        firstPage: BigInt(firstPage),
        pageCount,
      },
    });
  }

  close(): void {
    this.framed.destroy();
  }
}
