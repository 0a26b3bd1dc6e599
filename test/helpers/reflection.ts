import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/**
 * A minimal grpc.reflection.v1 client (what grpcurl uses): lists the services
 * a server exposes through reflection.
 */
export async function listServicesByReflection(
  address: string,
  credentials: grpc.ChannelCredentials,
  deadlineMs = 5000,
): Promise<string[]> {
  const require = createRequire(import.meta.url);
  const root = dirname(require.resolve('@grpc/reflection/package.json'));
  const def = protoLoader.loadSync(join(root, 'build/proto/grpc/reflection/v1/reflection.proto'), {
    keepCase: true,
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    grpc: {
      reflection: {
        v1: { ServerReflection: new (a: string, c: grpc.ChannelCredentials) => grpc.Client };
      };
    };
  };
  const client = new pkg.grpc.reflection.v1.ServerReflection(
    address,
    credentials,
  ) as grpc.Client & {
    ServerReflectionInfo(opts: { deadline: number }): grpc.ClientDuplexStream<unknown, unknown>;
  };
  try {
    return await new Promise<string[]>((resolve, reject) => {
      const call = client.ServerReflectionInfo({ deadline: Date.now() + deadlineMs });
      call.on('data', (res: { list_services_response?: { service: { name: string }[] } }) => {
        resolve((res.list_services_response?.service ?? []).map((s) => s.name).sort());
        call.end();
      });
      call.on('error', reject);
      call.write({ list_services: '' });
    });
  } finally {
    client.close();
  }
}
