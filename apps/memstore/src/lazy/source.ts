import type { OpenedPageSource } from './page-sources.js';

/** The source memstore as the target sees it: the three page-source calls. */
export interface SourceMemstore {
  open(req: { regionId: string; identity: string; size: number }): Promise<OpenedPageSource>;
  claim(sourceId: string, epoch: number): Promise<number>;
  close(sourceId: string, complete: boolean): Promise<void>;
  /** Drops the gRPC channel. */
  dispose(): void;
}

/** Makes the client of the source memstore at an address. */
export type SourceConnector = (address: string) => SourceMemstore;
